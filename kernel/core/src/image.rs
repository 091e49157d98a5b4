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

/// A page of an image that can be shared by every domain built from it: covered by
/// read-only segments only (text, rodata), so loaded once per image and mapped read-only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SharedPage {
    pub va: u64,
    /// Whether a segment covering it is executable.
    pub executable: bool,
}

/// The pages of a checked image that no writable segment touches, in address order: what
/// the domain builder loads once per image (a page also touched by a writable segment, and
/// the bss, stay each domain's own).
pub fn shared_pages(image: &[u8]) -> Result<alloc::vec::Vec<SharedPage>, ImageError> {
    let (_, segments) = segments(image)?;
    let segments: alloc::vec::Vec<Segment> = segments.collect();
    let touches = |s: &Segment, page: u64| s.vaddr < page + 4096 && page < s.vaddr + s.mem_bytes;
    let mut pages: alloc::vec::Vec<SharedPage> = alloc::vec::Vec::new();
    for seg in segments.iter().filter(|s| !s.writable) {
        let mut page = seg.vaddr & !0xfff;
        while page < seg.vaddr + seg.mem_bytes {
            if !segments.iter().any(|s| s.writable && touches(s, page)) {
                match pages.iter_mut().find(|p| p.va == page) {
                    Some(p) => p.executable |= seg.executable,
                    None => pages.push(SharedPage {
                        va: page,
                        executable: seg.executable,
                    }),
                }
            }
            page += 4096;
        }
    }
    pages.sort_unstable_by_key(|p| p.va);
    Ok(pages)
}

/// Copies into `page` (4096 zeroed bytes) what the checked image's segments load at the
/// page `va`: the file bytes of every segment that covers part of it.
pub fn fill_page(image: &[u8], va: u64, page: &mut [u8]) -> Result<(), ImageError> {
    let (_, segments) = segments(image)?;
    for seg in segments {
        let (lo, hi) = (
            seg.vaddr.max(va),
            (seg.vaddr + seg.file_bytes).min(va + 4096),
        );
        if lo < hi {
            let from = (seg.file_offset + (lo - seg.vaddr)) as usize;
            let to = (lo - va) as usize;
            let n = (hi - lo) as usize;
            page[to..to + n].copy_from_slice(&image[from..from + n]);
        }
    }
    Ok(())
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

    /// An ELF64 executable with `segs` = (vaddr, file bytes, mem bytes, flags), each loaded
    /// from the next page-aligned file offset from 0x1000; segment i's bytes are all `i + 1`.
    fn elf_of(segs: &[(u64, u64, u64, u32)]) -> Vec<u8> {
        let offsets: Vec<u64> = segs
            .iter()
            .scan(0x1000, |at, s| {
                let here = *at;
                *at += s.1.next_multiple_of(0x1000);
                Some(here)
            })
            .collect();
        let mut b = Vec::new();
        b.extend_from_slice(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0");
        b.extend_from_slice(&2u16.to_le_bytes());
        b.extend_from_slice(&62u16.to_le_bytes());
        b.extend_from_slice(&1u32.to_le_bytes());
        b.extend_from_slice(&segs[0].0.to_le_bytes());
        b.extend_from_slice(&64u64.to_le_bytes());
        b.extend_from_slice(&0u64.to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
        b.extend_from_slice(&64u16.to_le_bytes());
        b.extend_from_slice(&56u16.to_le_bytes());
        b.extend_from_slice(&(segs.len() as u16).to_le_bytes());
        b.extend_from_slice(&[0; 6]);
        for (i, &(vaddr, file, mem, flags)) in segs.iter().enumerate() {
            b.extend_from_slice(&PT_LOAD.to_le_bytes());
            b.extend_from_slice(&flags.to_le_bytes());
            b.extend_from_slice(&offsets[i].to_le_bytes());
            b.extend_from_slice(&vaddr.to_le_bytes());
            b.extend_from_slice(&vaddr.to_le_bytes());
            b.extend_from_slice(&file.to_le_bytes());
            b.extend_from_slice(&mem.to_le_bytes());
            b.extend_from_slice(&0x1000u64.to_le_bytes());
        }
        for (i, &(_, file, _, _)) in segs.iter().enumerate() {
            b.resize(offsets[i] as usize, 0);
            b.extend(core::iter::repeat_n(i as u8 + 1, file as usize));
        }
        b
    }

    #[test]
    fn only_pages_no_writable_segment_touches_are_shared() {
        const R: u32 = 4;
        const RX: u32 = 5;
        const RW: u32 = 6;
        let b = IMAGE_BASE;
        // text: 2.5 pages; rodata in the next page; data starting in rodata's page's
        // successor but sharing the page of a second read-only segment.
        let image = elf_of(&[
            (b, 0x2800, 0x2800, RX),
            (b + 0x3000, 0x100, 0x100, R),
            (b + 0x5000, 0x100, 0x100, R),
            (b + 0x5800, 0x100, 0x900, RW),
        ]);
        let pages = shared_pages(&image).unwrap();
        let shared = |va, executable| SharedPage { va, executable };
        assert_eq!(
            pages,
            [
                shared(b, true),
                shared(b + 0x1000, true),
                shared(b + 0x2000, true),
                shared(b + 0x3000, false),
            ],
            "the page read-only and writable segments share stays private"
        );
        let mut page = [0u8; 4096];
        fill_page(&image, b + 0x2000, &mut page).unwrap();
        assert!(page[..0x800].iter().all(|&x| x == 1));
        assert!(page[0x800..].iter().all(|&x| x == 0), "past the file bytes");
        let mut page = [0u8; 4096];
        fill_page(&image, b + 0x5000, &mut page).unwrap();
        assert!(page[..0x100].iter().all(|&x| x == 3));
        assert!(
            page[0x800..0x900].iter().all(|&x| x == 4),
            "both segments' bytes"
        );
        assert_eq!(shared_pages(b"junk").err(), Some(ImageError::NotElf));
    }

    #[test]
    fn two_read_only_segments_in_one_page_share_it_executable_if_either_is() {
        let b = IMAGE_BASE;
        let image = elf_of(&[(b, 0x100, 0x100, 4), (b + 0x800, 0x100, 0x100, 5)]);
        assert_eq!(
            shared_pages(&image).unwrap(),
            [SharedPage {
                va: b,
                executable: true
            }]
        );
        let mut page = [0u8; 4096];
        fill_page(&image, b, &mut page).unwrap();
        assert_eq!((page[0], page[0x800], page[0x400]), (1, 2, 0));
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
