//! Guest images: finding them in the boot module and checking their ELF headers.
//!
//! The boot module is a ustar archive (made by the runner) holding one ELF per workload, named
//! by the workload, and the experiment plan (`plan`). An image is accepted only if it is a
//! static x86_64 executable whose loadable segments all lie inside the guest image window of
//! `abi::layout`, so that a bad image fails at creation with a reason rather than by mapping
//! something over the hypervisor's half.

use abi::layout::{IMAGE_BASE, IMAGE_LIMIT};
use elf::ElfBytes;
use elf::abi::{EM_X86_64, ET_EXEC, PF_W, PF_X, PT_INTERP, PT_LOAD};
use elf::endian::LittleEndian;
use tar_no_std::TarArchiveRef;

/// Why an image cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageError {
    /// The boot module is not a ustar archive.
    BadArchive,
    /// No file of that name in the archive.
    NotFound,
    /// Not a 64-bit little-endian ELF executable for x86_64.
    NotElf,
    /// Dynamically linked (has an interpreter).
    Dynamic,
    /// A segment outside the image window, or with inconsistent sizes.
    BadSegment { vaddr: u64 },
    /// No loadable segment.
    Empty,
}

impl core::fmt::Display for ImageError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ImageError::BadArchive => write!(f, "the boot module is not a ustar archive"),
            ImageError::NotFound => write!(f, "no such image in the boot module"),
            ImageError::NotElf => write!(f, "not a static x86_64 ELF executable"),
            ImageError::Dynamic => write!(f, "dynamically linked (has an interpreter)"),
            ImageError::BadSegment { vaddr } => write!(
                f,
                "segment or entry at {vaddr:#x} outside the guest image window {IMAGE_BASE:#x}..{IMAGE_LIMIT:#x}"
            ),
            ImageError::Empty => write!(f, "no loadable segment"),
        }
    }
}

/// One loadable segment, checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    pub vaddr: u64,
    pub mem_bytes: u64,
    pub file_offset: u64,
    pub file_bytes: u64,
    pub writable: bool,
    pub executable: bool,
}

/// Finds the file `name` in the archive `module`.
pub fn find<'a>(module: &'a [u8], name: &str) -> Result<&'a [u8], ImageError> {
    let archive = TarArchiveRef::new(module).map_err(|_| ImageError::BadArchive)?;
    archive
        .entries()
        .find(|e| e.filename().as_str().is_ok_and(|f| f == name))
        .map(|e| e.data())
        .ok_or(ImageError::NotFound)
}

/// The names of the files in the archive, for messages.
pub fn names(module: &[u8]) -> impl Iterator<Item = tar_no_std::ArchiveEntry<'_>> {
    TarArchiveRef::new(module)
        .into_iter()
        .flat_map(|a| a.entries())
}

/// Checks an ELF image and returns its entry point and loadable segments.
pub fn segments(image: &[u8]) -> Result<(u64, impl Iterator<Item = Segment> + '_), ImageError> {
    let elf = ElfBytes::<LittleEndian>::minimal_parse(image).map_err(|_| ImageError::NotElf)?;
    if elf.ehdr.e_machine != EM_X86_64
        || elf.ehdr.e_type != ET_EXEC
        || elf.ehdr.class != elf::file::Class::ELF64
    {
        return Err(ImageError::NotElf);
    }
    let table = elf.segments().ok_or(ImageError::Empty)?;
    let mut loads = 0;
    for ph in table.iter() {
        if ph.p_type == PT_INTERP {
            return Err(ImageError::Dynamic);
        }
        if ph.p_type != PT_LOAD {
            continue;
        }
        loads += 1;
        let end = ph.p_vaddr.checked_add(ph.p_memsz);
        let file_end = ph.p_offset.checked_add(ph.p_filesz);
        let inside = ph.p_vaddr >= IMAGE_BASE && end.is_some_and(|e| e <= IMAGE_LIMIT);
        let sizes_ok =
            ph.p_filesz <= ph.p_memsz && file_end.is_some_and(|e| e <= image.len() as u64);
        if !inside || !sizes_ok {
            return Err(ImageError::BadSegment { vaddr: ph.p_vaddr });
        }
    }
    if loads == 0 {
        return Err(ImageError::Empty);
    }
    let entry = elf.ehdr.e_entry;
    if !(IMAGE_BASE..IMAGE_LIMIT).contains(&entry) {
        return Err(ImageError::BadSegment { vaddr: entry });
    }
    Ok((
        entry,
        table
            .into_iter()
            .filter(|ph| ph.p_type == PT_LOAD)
            .map(|ph| Segment {
                vaddr: ph.p_vaddr,
                mem_bytes: ph.p_memsz,
                file_offset: ph.p_offset,
                file_bytes: ph.p_filesz,
                writable: ph.p_flags & PF_W != 0,
                executable: ph.p_flags & PF_X != 0,
            }),
    ))
}

/// Bytes the image spans in memory once loaded: from the page of its lowest segment to the
/// end of its highest (bss included). What `sched::limits::domain_frames` counts it as.
pub fn span(image: &[u8]) -> Result<u64, ImageError> {
    let (_, segments) = segments(image)?;
    let (lo, hi) = segments.fold((u64::MAX, 0), |(lo, hi), s| {
        (lo.min(s.vaddr & !0xfff), hi.max(s.vaddr + s.mem_bytes))
    });
    Ok(hi.saturating_sub(lo))
}

#[cfg(test)]
mod tests {
    use super::*;
    extern crate std;
    use std::vec::Vec;

    /// A minimal ELF64 executable: header, one program header of `p_type` at `vaddr`.
    fn elf(p_type: u32, vaddr: u64, memsz: u64, entry: u64) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0");
        b.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
        b.extend_from_slice(&62u16.to_le_bytes()); // EM_X86_64
        b.extend_from_slice(&1u32.to_le_bytes());
        b.extend_from_slice(&entry.to_le_bytes());
        b.extend_from_slice(&64u64.to_le_bytes()); // e_phoff
        b.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
        b.extend_from_slice(&0u32.to_le_bytes());
        b.extend_from_slice(&64u16.to_le_bytes()); // e_ehsize
        b.extend_from_slice(&56u16.to_le_bytes()); // e_phentsize
        b.extend_from_slice(&1u16.to_le_bytes()); // e_phnum
        b.extend_from_slice(&[0; 6]);
        b.extend_from_slice(&p_type.to_le_bytes());
        b.extend_from_slice(&(4u32 | 1).to_le_bytes()); // R+X
        b.extend_from_slice(&0u64.to_le_bytes()); // p_offset
        b.extend_from_slice(&vaddr.to_le_bytes());
        b.extend_from_slice(&vaddr.to_le_bytes());
        b.extend_from_slice(&120u64.to_le_bytes()); // p_filesz
        b.extend_from_slice(&memsz.to_le_bytes());
        b.extend_from_slice(&0x1000u64.to_le_bytes());
        b
    }

    #[test]
    fn accepts_an_image_in_the_window() {
        let image = elf(PT_LOAD, IMAGE_BASE, 0x2000, IMAGE_BASE + 0x10);
        let (entry, segs) = segments(&image).unwrap();
        let segs: Vec<_> = segs.collect();
        assert_eq!(entry, IMAGE_BASE + 0x10);
        assert_eq!(segs.len(), 1);
        assert_eq!(
            (segs[0].vaddr, segs[0].mem_bytes, segs[0].file_bytes),
            (IMAGE_BASE, 0x2000, 120)
        );
        assert!(segs[0].executable && !segs[0].writable);
    }

    #[test]
    fn span_runs_from_the_lowest_page_to_the_end_of_the_bss() {
        let image = elf(PT_LOAD, IMAGE_BASE + 0x10, 0x2000, IMAGE_BASE + 0x10);
        assert_eq!(span(&image), Ok(0x2010));
        assert_eq!(span(b"not an elf"), Err(ImageError::NotElf));
    }

    #[test]
    fn refuses_segments_over_the_hypervisor_or_outside_the_window() {
        let over = elf(PT_LOAD, 0xffff_ffff_8010_0000, 0x1000, IMAGE_BASE);
        assert!(matches!(
            segments(&over).err(),
            Some(ImageError::BadSegment { .. })
        ));
        let low = elf(PT_LOAD, 0x1000, 0x1000, IMAGE_BASE);
        assert!(matches!(
            segments(&low).err(),
            Some(ImageError::BadSegment { .. })
        ));
        let wrap = elf(PT_LOAD, IMAGE_BASE, u64::MAX, IMAGE_BASE);
        assert!(matches!(
            segments(&wrap).err(),
            Some(ImageError::BadSegment { .. })
        ));
        let entry_outside = elf(PT_LOAD, IMAGE_BASE, 0x1000, 0x10);
        assert!(matches!(
            segments(&entry_outside).err(),
            Some(ImageError::BadSegment { .. })
        ));
    }

    #[test]
    fn refuses_garbage_and_dynamic_images() {
        assert_eq!(segments(b"not an elf").err(), Some(ImageError::NotElf));
        let dynamic = elf(PT_INTERP, IMAGE_BASE, 0x1000, IMAGE_BASE);
        assert_eq!(segments(&dynamic).err(), Some(ImageError::Dynamic));
    }

    #[test]
    fn finds_files_in_a_tar_archive() {
        let mut builder = tar::Builder::new(Vec::new());
        for (name, data) in [("cpu", &b"cpu image"[..]), ("plan", b"plan bytes")] {
            let mut header = tar::Header::new_ustar();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            builder.append_data(&mut header, name, data).unwrap();
        }
        let archive = builder.into_inner().unwrap();
        assert_eq!(find(&archive, "plan").unwrap(), b"plan bytes");
        assert_eq!(find(&archive, "cpu").unwrap(), b"cpu image");
        assert_eq!(find(&archive, "latency").err(), Some(ImageError::NotFound));
        assert_eq!(
            find(&archive[..100], "cpu").err(),
            Some(ImageError::BadArchive)
        );
    }
}
