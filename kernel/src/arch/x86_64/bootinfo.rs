//! The boot information, read from whichever protocol started us.
//!
//! PVH hands over `hvm_start_info` (Xen's `arch-x86/hvm/start_info.h`): the command line,
//! an E820-style memory map, the RSDP and a list of modules. Multiboot2 hands over tags with
//! the same facts (the `multiboot2` crate reads them). Everything is copied out at once, so
//! the memory the loader used can be reused afterwards; only the boot module stays where it is.
//!
//! Why reading the loader's structures through the direct map is sound: their address is
//! the one the loader handed to the boot code ([`super::boot::handoff`]), never one a caller
//! gives; the loader put them in RAM below 4 GiB, which the boot page tables direct-map; and
//! [`read`] runs once, before [`super::bootmem::BootMemory::claim`] (which needs its
//! [`BootInfo`]), so nothing of the hypervisor has been put in that memory yet and nothing
//! writes it while it is read.

use core::sync::atomic::{AtomicBool, Ordering};

use arrayvec::{ArrayString, ArrayVec};
use kerncore::memmap::{MAX_RANGES, Range, Region, RegionKind};

use super::boot::{MULTIBOOT2_MARKER, PVH_MARKER};
use super::paging::phys_to_virt;

/// Longest command line kept.
const CMDLINE_BYTES: usize = 1024;

/// The facts the boot loader gave us. Only [`read`] makes one, so the physical addresses
/// in it are the loader's (arch reads memory at them).
pub struct BootInfo {
    /// "pvh" or "multiboot2".
    pub protocol: &'static str,
    pub cmdline: ArrayString<CMDLINE_BYTES>,
    pub(super) regions: ArrayVec<Region, MAX_RANGES>,
    /// Physical address of the ACPI RSDP, if the loader gave one.
    pub(super) rsdp: Option<u64>,
    /// The first boot module (the experiment archive), if any.
    pub(super) module: Option<Range>,
    /// Memory the boot information itself occupies, still needed while ACPI is read
    /// (multiboot2 keeps its RSDP copy there).
    pub(super) info: Range,
}

/// Why the boot information could not be read.
#[derive(Debug)]
pub enum BootInfoError {
    UnknownProtocol(u32),
    BadMagic,
    Multiboot2(multiboot2::LoadError),
    CmdlineTooLong,
}

impl core::fmt::Display for BootInfoError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            BootInfoError::UnknownProtocol(marker) => {
                write!(f, "unknown boot protocol (marker {marker:#x})")
            }
            BootInfoError::BadMagic => write!(f, "hvm_start_info has a bad magic number"),
            BootInfoError::Multiboot2(e) => write!(f, "bad multiboot2 information: {e:?}"),
            BootInfoError::CmdlineTooLong => {
                write!(f, "command line longer than {CMDLINE_BYTES} bytes")
            }
        }
    }
}

/// `hvm_start_info`, version 1.
#[repr(C)]
struct HvmStartInfo {
    magic: u32,
    version: u32,
    flags: u32,
    nr_modules: u32,
    modlist_paddr: u64,
    cmdline_paddr: u64,
    rsdp_paddr: u64,
    memmap_paddr: u64,
    memmap_entries: u32,
    reserved: u32,
}

#[repr(C)]
struct HvmModlistEntry {
    paddr: u64,
    size: u64,
    cmdline_paddr: u64,
    reserved: u64,
}

#[repr(C)]
struct HvmMemmapEntry {
    addr: u64,
    size: u64,
    kind: u32,
    reserved: u32,
}

/// Set by the first [`read`].
static READ: AtomicBool = AtomicBool::new(false);

/// Reads the boot information the loader handed to the boot code.
///
/// # Panics
/// On a second call: the loader's memory may have been reused by then.
pub fn read() -> Result<BootInfo, BootInfoError> {
    assert!(
        !READ.swap(true, Ordering::AcqRel),
        "the boot information is read once"
    );
    let (marker, info_phys) = super::boot::handoff();
    match marker {
        PVH_MARKER => read_pvh(info_phys),
        MULTIBOOT2_MARKER => read_multiboot2(info_phys),
        other => Err(BootInfoError::UnknownProtocol(other)),
    }
}

/// Copies a NUL-terminated string from physical memory.
fn copy_c_string(phys: u64) -> Result<ArrayString<CMDLINE_BYTES>, BootInfoError> {
    let mut out = ArrayString::new();
    if phys == 0 {
        return Ok(out);
    }
    for i in 0..CMDLINE_BYTES as u64 {
        // SAFETY: the loader placed a NUL-terminated string at `phys`, in RAM covered by the
        // direct map and unused by the hypervisor (see the module doc); we stop at its NUL.
        let byte = unsafe { phys_to_virt(phys + i).as_ptr::<u8>().read() };
        if byte == 0 {
            return Ok(out);
        }
        out.try_push(char::from(byte))
            .map_err(|_| BootInfoError::CmdlineTooLong)?;
    }
    Err(BootInfoError::CmdlineTooLong)
}

fn read_pvh(info_phys: u64) -> Result<BootInfo, BootInfoError> {
    // SAFETY: the PVH entry passed the address of `hvm_start_info` in EBX; it is RAM in the
    // direct map and nothing has overwritten it yet (see the module doc). A `u32`/`u64`
    // struct: any bits are valid, and the loader aligns it (8 bytes).
    let info = unsafe { &*phys_to_virt(info_phys).as_ptr::<HvmStartInfo>() };
    if info.magic != PVH_MARKER {
        return Err(BootInfoError::BadMagic);
    }
    let mut regions = ArrayVec::new();
    if info.version >= 1 {
        for i in 0..u64::from(info.memmap_entries).min(MAX_RANGES as u64) {
            let at = info.memmap_paddr + i * core::mem::size_of::<HvmMemmapEntry>() as u64;
            // SAFETY: the loader's memory map has `memmap_entries` entries at `memmap_paddr`.
            let e = unsafe { &*phys_to_virt(at).as_ptr::<HvmMemmapEntry>() };
            regions.push(Region {
                start: e.addr,
                len: e.size,
                kind: RegionKind::from_e820(e.kind),
            });
        }
    }
    let module = (info.nr_modules > 0).then(|| {
        // SAFETY: `nr_modules > 0` entries are at `modlist_paddr`.
        let m = unsafe { &*phys_to_virt(info.modlist_paddr).as_ptr::<HvmModlistEntry>() };
        Range {
            start: m.paddr,
            end: m.paddr + m.size,
        }
    });
    Ok(BootInfo {
        protocol: "pvh",
        cmdline: copy_c_string(info.cmdline_paddr)?,
        regions,
        rsdp: (info.rsdp_paddr != 0).then_some(info.rsdp_paddr),
        module,
        info: Range {
            start: info_phys,
            end: info_phys + core::mem::size_of::<HvmStartInfo>() as u64,
        },
    })
}

fn read_multiboot2(info_phys: u64) -> Result<BootInfo, BootInfoError> {
    // SAFETY: GRUB passed the address of the multiboot2 information in EBX; it is RAM in
    // the direct map, and the crate validates its header and tag structure.
    let mbi = unsafe {
        multiboot2::BootInformation::load(
            phys_to_virt(info_phys).as_ptr::<multiboot2::BootInformationHeader>(),
        )
    }
    .map_err(BootInfoError::Multiboot2)?;
    let mut cmdline = ArrayString::new();
    if let Some(line) = mbi.command_line_tag().and_then(|t| t.cmdline().ok()) {
        cmdline
            .try_push_str(line)
            .map_err(|_| BootInfoError::CmdlineTooLong)?;
    }
    let mut regions = ArrayVec::new();
    if let Some(map) = mbi.memory_map_tag() {
        for area in map.memory_areas().iter().take(MAX_RANGES) {
            regions.push(Region {
                start: area.start_address(),
                len: area.size(),
                kind: RegionKind::from_e820(u32::from(area.typ())),
            });
        }
    }
    // GRUB copies the RSDP into the tag, right after the tag's 8-byte header; the copy is a
    // valid RSDP (signature and checksum), so ACPI can be read from there.
    let virt_to_phys = |p: *const u8| p as u64 - phys_to_virt(0).as_u64();
    let rsdp = mbi
        .rsdp_v2_tag()
        .map(|t| virt_to_phys((t as *const multiboot2::RsdpV2Tag).cast::<u8>()) + 8)
        .or_else(|| {
            mbi.rsdp_v1_tag()
                .map(|t| virt_to_phys((t as *const multiboot2::RsdpV1Tag).cast::<u8>()) + 8)
        });
    let module = mbi.module_tags().next().map(|m| Range {
        start: u64::from(m.start_address()),
        end: u64::from(m.end_address()),
    });
    Ok(BootInfo {
        protocol: "multiboot2",
        cmdline,
        regions,
        rsdp,
        module,
        info: Range {
            start: info_phys,
            end: info_phys + mbi.total_size() as u64,
        },
    })
}
