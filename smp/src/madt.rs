//! CPU discovery from the ACPI MADT: which processors exist, which one we are, where the
//! local and I/O APICs live.
//!
//! The `acpi` crate finds the tables (RSDP → XSDT/RSDT → "APIC" and "FACP", checksums
//! checked). The MADT's variable-length entry list is then walked here, over the table's
//! bytes, with every length checked: `acpi` 5.2's own entry iterator trusts each entry's
//! length byte, so a zero length would loop forever and a short one would read past the
//! entry. Walking bytes also lets the host tests feed synthetic tables through the very
//! same code ([`parse_entries`] then [`TopologyBuilder`]).
//!
//! Interpretation rules (ACPI 6.5 §5.2.12):
//! - a processor is listed by a Processor Local APIC entry (8-bit id) or a Processor Local
//!   x2APIC entry (32-bit id); firmware may list the same CPU in both, so ids are de-duplicated
//!   (first listing wins);
//! - flags bit 0 = enabled: these are the CPUs we start; bit 1 = online capable (disabled now,
//!   hot-pluggable later): counted, never started; neither bit: absent, ignored;
//! - APIC id 0xFF (xAPIC) and 0xFFFF_FFFF (x2APIC) are not CPUs; without x2APIC support an id
//!   above 0xFE cannot be addressed by an IPI, so it is skipped;
//! - the bootstrap CPU is always index 0, even if listed late or beyond [`MAX_CPUS`]; the other
//!   CPUs keep the firmware's order (which lists threads and packages in a deliberate order).

use arrayvec::ArrayVec;

use crate::MAX_CPUS;

/// Most I/O APICs recorded; a large server has a handful.
pub const MAX_IO_APICS: usize = 32;
/// Most interrupt source overrides recorded (ISA IRQs are 0..15; a few spare).
pub const MAX_OVERRIDES: usize = 24;

/// One processor the hypervisor will run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cpu {
    /// Local APIC id (the IPI destination).
    pub apic_id: u32,
    /// ACPI processor UID (ties the CPU to the namespace; 8 bits in Local APIC entries).
    pub acpi_uid: u32,
}

/// One I/O APIC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoApic {
    /// I/O APIC id.
    pub id: u8,
    /// Physical address of its register window.
    pub address: u32,
    /// First global system interrupt it serves.
    pub gsi_base: u32,
}

/// An ISA interrupt routed to a different GSI or with non-default polarity/trigger.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InterruptOverride {
    /// ISA IRQ (bus 0).
    pub irq: u8,
    /// Global system interrupt it arrives on.
    pub gsi: u32,
    /// MPS INTI flags (polarity bits 0..1, trigger mode bits 2..3).
    pub flags: u16,
}

/// The ACPI power-management timer: a 3.579545 MHz counter in I/O space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PmTimer {
    /// I/O port of the counter.
    pub port: u16,
    /// Whether the counter is 32 bits wide (else 24).
    pub is_32_bit: bool,
}

/// What the firmware says about the machine's processors and interrupt controllers.
#[derive(Clone, Debug)]
pub struct Topology {
    /// APIC id of the bootstrap CPU (the one that ran [`discover`]).
    pub bsp_apic_id: u32,
    /// Enabled CPUs, BSP first; the position is the CPU index used everywhere else.
    pub cpus: ArrayVec<Cpu, MAX_CPUS>,
    /// I/O APICs in table order.
    pub io_apics: ArrayVec<IoApic, MAX_IO_APICS>,
    /// ISA interrupt source overrides.
    pub overrides: ArrayVec<InterruptOverride, MAX_OVERRIDES>,
    /// Physical address of the local APIC registers (xAPIC MMIO mode).
    pub local_apic_phys: u64,
    /// Whether the machine also has dual 8259 PICs (which the kernel should mask).
    pub has_8259: bool,
    /// The ACPI PM timer, if the FADT describes one in I/O space.
    pub pm_timer: Option<PmTimer>,
    /// CPUs marked online-capable but not enabled (hot-plug slots): not started.
    pub online_capable: usize,
    /// Enabled CPUs left out: over [`MAX_CPUS`], or unaddressable without x2APIC.
    pub skipped_cpus: usize,
    /// Whether the BSP appeared in the MADT at all (if not, it was added with uid `u32::MAX`).
    pub bsp_listed: bool,
}

impl Topology {
    /// The index of the CPU with `apic_id`, if it is one of ours.
    pub fn index_of(&self, apic_id: u32) -> Option<usize> {
        self.cpus.iter().position(|c| c.apic_id == apic_id)
    }
}

/// Why discovery failed.
#[derive(Debug)]
pub enum Error {
    /// The `acpi` crate rejected the RSDP or root table, or found no MADT.
    Acpi(acpi::AcpiError),
    /// The MADT's own length or an entry's length is inconsistent.
    MalformedMadt,
}

/// One MADT entry this crate cares about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MadtRecord {
    /// Type 0: Processor Local APIC.
    LocalApic {
        acpi_uid: u8,
        apic_id: u8,
        flags: u32,
    },
    /// Type 1: I/O APIC.
    IoApic(IoApic),
    /// Type 2: Interrupt Source Override.
    Override(InterruptOverride),
    /// Type 5: Local APIC Address Override.
    LocalApicAddress(u64),
    /// Type 9: Processor Local x2APIC.
    LocalX2Apic {
        acpi_uid: u32,
        apic_id: u32,
        flags: u32,
    },
}

const FLAG_ENABLED: u32 = 1 << 0;
const FLAG_ONLINE_CAPABLE: u32 = 1 << 1;
/// Size of the fixed MADT header: SDT header (36) + local APIC address (4) + flags (4).
pub const MADT_HEADER_LEN: usize = 44;

/// The fixed part of the MADT, read from its first [`MADT_HEADER_LEN`] bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MadtHeader {
    /// 32-bit local APIC address.
    pub local_apic_address: u32,
    /// MADT flags (bit 0: PC-AT compatible dual 8259).
    pub flags: u32,
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn le64(b: &[u8], at: usize) -> u64 {
    u64::from(le32(b, at)) | (u64::from(le32(b, at + 4)) << 32)
}

/// Reads the fixed part of a MADT; `table` must be exactly the header's length field long.
pub fn parse_header(table: &[u8]) -> Result<MadtHeader, Error> {
    if table.len() < MADT_HEADER_LEN || le32(table, 4) as usize != table.len() {
        return Err(Error::MalformedMadt);
    }
    Ok(MadtHeader {
        local_apic_address: le32(table, 36),
        flags: le32(table, 40),
    })
}

/// Walks the entries of a whole MADT (header included; see [`parse_header`]) and calls `each`
/// for every entry of a known type. Unknown types are skipped by their length; a length that
/// is too short for its type or runs past the table stops the walk with an error.
pub fn parse_entries(table: &[u8], mut each: impl FnMut(MadtRecord)) -> Result<(), Error> {
    parse_header(table)?;
    let mut at = MADT_HEADER_LEN;
    while at < table.len() {
        if table.len() - at < 2 {
            return Err(Error::MalformedMadt);
        }
        let (kind, len) = (table[at], usize::from(table[at + 1]));
        // Each known type has a minimum length (ACPI 6.5 table 5.45 and following).
        let need = match kind {
            0 => 8,
            1 => 12,
            2 => 10,
            5 => 12,
            9 => 16,
            _ => 2,
        };
        if len < need || len > table.len() - at {
            return Err(Error::MalformedMadt);
        }
        let e = &table[at..at + len];
        match kind {
            0 => each(MadtRecord::LocalApic {
                acpi_uid: e[2],
                apic_id: e[3],
                flags: le32(e, 4),
            }),
            1 => each(MadtRecord::IoApic(IoApic {
                id: e[2],
                address: le32(e, 4),
                gsi_base: le32(e, 8),
            })),
            // Bus 0 is ISA, the only bus the specification defines for overrides.
            2 if e[2] == 0 => each(MadtRecord::Override(InterruptOverride {
                irq: e[3],
                gsi: le32(e, 4),
                flags: le16(e, 8),
            })),
            5 => each(MadtRecord::LocalApicAddress(le64(e, 4))),
            9 => each(MadtRecord::LocalX2Apic {
                apic_id: le32(e, 4),
                flags: le32(e, 8),
                acpi_uid: le32(e, 12),
            }),
            _ => {}
        }
        at += len;
    }
    Ok(())
}

/// Interprets a whole MADT as [`discover`] does, for a BSP with `bsp_apic_id` on a machine
/// with (`x2apic`) or without x2APIC support.
pub fn interpret(table: &[u8], bsp_apic_id: u32, x2apic: bool) -> Result<Topology, Error> {
    let mut builder = TopologyBuilder::new(parse_header(table)?, bsp_apic_id, x2apic);
    parse_entries(table, |r| builder.add(r))?;
    Ok(builder.finish())
}

/// Builds a [`Topology`] from MADT records, one at a time, in table order.
pub struct TopologyBuilder {
    topo: Topology,
    x2apic: bool,
}

impl TopologyBuilder {
    /// Starts from the MADT header; `bsp_apic_id` is the APIC id of the calling CPU and
    /// `x2apic` whether IPIs can reach 32-bit APIC ids.
    pub fn new(header: MadtHeader, bsp_apic_id: u32, x2apic: bool) -> Self {
        TopologyBuilder {
            topo: Topology {
                bsp_apic_id,
                cpus: ArrayVec::new(),
                io_apics: ArrayVec::new(),
                overrides: ArrayVec::new(),
                local_apic_phys: u64::from(header.local_apic_address),
                has_8259: header.flags & 1 != 0,
                pm_timer: None,
                online_capable: 0,
                skipped_cpus: 0,
                bsp_listed: false,
            },
            x2apic,
        }
    }

    /// Adds one record.
    pub fn add(&mut self, record: MadtRecord) {
        match record {
            MadtRecord::LocalApic {
                acpi_uid,
                apic_id,
                flags,
            } => {
                if apic_id != 0xFF {
                    self.add_cpu(u32::from(apic_id), u32::from(acpi_uid), flags);
                }
            }
            MadtRecord::LocalX2Apic {
                acpi_uid,
                apic_id,
                flags,
            } => {
                if apic_id != u32::MAX {
                    self.add_cpu(apic_id, acpi_uid, flags);
                }
            }
            MadtRecord::IoApic(io) => {
                let _ = self.topo.io_apics.try_push(io);
            }
            MadtRecord::Override(o) => {
                let _ = self.topo.overrides.try_push(o);
            }
            MadtRecord::LocalApicAddress(phys) => self.topo.local_apic_phys = phys,
        }
    }

    fn add_cpu(&mut self, apic_id: u32, acpi_uid: u32, flags: u32) {
        let is_bsp = apic_id == self.topo.bsp_apic_id;
        if flags & FLAG_ENABLED == 0 {
            // A disabled BSP listing is a firmware bug; we are running, so treat it as enabled.
            if !is_bsp {
                if flags & FLAG_ONLINE_CAPABLE != 0 {
                    self.topo.online_capable += 1;
                }
                return;
            }
        }
        if self.topo.cpus.iter().any(|c| c.apic_id == apic_id) {
            return;
        }
        if !self.x2apic && apic_id >= 0xFF && !is_bsp {
            self.topo.skipped_cpus += 1;
            return;
        }
        let cpu = Cpu { apic_id, acpi_uid };
        if is_bsp {
            self.topo.bsp_listed = true;
            if self.topo.cpus.is_full() {
                // Make room: the BSP must be in the set; the last AP listed gives way.
                self.topo.cpus.pop();
                self.topo.skipped_cpus += 1;
            }
            self.topo.cpus.insert(0, cpu);
        } else if self.topo.cpus.is_full()
            || (!self.topo.bsp_listed && self.topo.cpus.len() == MAX_CPUS - 1)
        {
            // Keep one slot for a BSP that has not been listed yet.
            self.topo.skipped_cpus += 1;
        } else {
            self.topo.cpus.push(cpu);
        }
    }

    /// Finishes: the BSP is index 0 whether or not the MADT listed it.
    pub fn finish(mut self) -> Topology {
        if !self.topo.bsp_listed {
            let bsp = Cpu {
                apic_id: self.topo.bsp_apic_id,
                acpi_uid: u32::MAX,
            };
            if self.topo.cpus.is_full() {
                self.topo.cpus.pop();
                self.topo.skipped_cpus += 1;
            }
            self.topo.cpus.insert(0, bsp);
        }
        self.topo
    }
}

/// Reads the MADT (and the FADT's PM timer) and returns the machine's topology, with the
/// calling CPU as the BSP.
///
/// `rsdp_phys` is the RSDP's physical address (from `hvm_start_info` or a multiboot2 tag).
///
/// # Safety
/// All physical memory below 4 GiB (where firmware puts its tables), and any table above it,
/// must be mapped readable at `phys_offset + physical address`, and `rsdp_phys` must be the
/// address of a real RSDP.
pub unsafe fn discover(rsdp_phys: u64, phys_offset: u64) -> Result<Topology, Error> {
    use acpi::address::AddressSpace;
    use acpi::fadt::Fadt;
    use acpi::madt::Madt;

    let handler = DirectMap { phys_offset };
    // SAFETY: the caller guarantees `rsdp_phys` is an RSDP and that the direct map covers
    // every table it leads to, which is all `DirectMap` needs.
    let tables =
        unsafe { acpi::AcpiTables::from_rsdp(handler, rsdp_phys as usize) }.map_err(Error::Acpi)?;
    let madt = tables.find_table::<Madt>().map_err(Error::Acpi)?;
    let len = madt.get().header.length as usize;
    // SAFETY: `find_table` validated the table's signature and its checksum over `length`
    // bytes, so all of them are mapped (direct map) and belong to the MADT.
    let bytes =
        unsafe { core::slice::from_raw_parts(madt.virtual_start().as_ptr().cast::<u8>(), len) };
    let mut topology = interpret(
        bytes,
        crate::arch::cpuid_apic_id(),
        crate::arch::has_x2apic(),
    )?;

    // The PM timer is optional: a missing or unusable FADT only loses a calibration fallback.
    if let Ok(fadt) = tables.find_table::<Fadt>()
        && let Ok(Some(gas)) = fadt.pm_timer_block()
        && gas.address_space == AddressSpace::SystemIo
        && gas.address <= 0xFFFF
    {
        topology.pm_timer = Some(PmTimer {
            port: gas.address as u16,
            is_32_bit: { fadt.flags }.pm_timer_is_32_bit(),
        });
    }
    Ok(topology)
}

/// Maps physical memory for `acpi` through the kernel's direct map; nothing to unmap.
#[derive(Clone, Copy, Debug)]
struct DirectMap {
    phys_offset: u64,
}

impl acpi::AcpiHandler for DirectMap {
    unsafe fn map_physical_region<T>(
        &self,
        physical_address: usize,
        size: usize,
    ) -> acpi::PhysicalMapping<Self, T> {
        let virt = (self.phys_offset as usize).wrapping_add(physical_address) as *mut T;
        // SAFETY: the direct map covers all physical memory the tables live in (the contract of
        // `discover`), so `virt` is a valid, non-null mapping of `size` bytes at `physical_address`.
        unsafe {
            acpi::PhysicalMapping::new(
                physical_address,
                core::ptr::NonNull::new_unchecked(virt),
                size,
                size,
                *self,
            )
        }
    }

    fn unmap_physical_region<T>(_region: &acpi::PhysicalMapping<Self, T>) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds MADT bytes: a 44-byte header (lengths fixed up) followed by `entries`.
    struct Madt(Vec<u8>);

    impl Madt {
        fn new(lapic: u32, flags: u32) -> Madt {
            let mut b = vec![0u8; MADT_HEADER_LEN];
            b[0..4].copy_from_slice(b"APIC");
            b[36..40].copy_from_slice(&lapic.to_le_bytes());
            b[40..44].copy_from_slice(&flags.to_le_bytes());
            Madt(b)
        }
        fn raw(mut self, bytes: &[u8]) -> Madt {
            self.0.extend_from_slice(bytes);
            self
        }
        fn lapic(self, uid: u8, id: u8, flags: u32) -> Madt {
            let mut e = vec![0, 8, uid, id];
            e.extend_from_slice(&flags.to_le_bytes());
            self.raw(&e)
        }
        fn x2apic(self, uid: u32, id: u32, flags: u32) -> Madt {
            let mut e = vec![9, 16, 0, 0];
            e.extend_from_slice(&id.to_le_bytes());
            e.extend_from_slice(&flags.to_le_bytes());
            e.extend_from_slice(&uid.to_le_bytes());
            self.raw(&e)
        }
        fn ioapic(self, id: u8, addr: u32, gsi: u32) -> Madt {
            let mut e = vec![1, 12, id, 0];
            e.extend_from_slice(&addr.to_le_bytes());
            e.extend_from_slice(&gsi.to_le_bytes());
            self.raw(&e)
        }
        fn bytes(mut self) -> Vec<u8> {
            let len = self.0.len() as u32;
            self.0[4..8].copy_from_slice(&len.to_le_bytes());
            self.0
        }
    }

    fn ids(t: &Topology) -> Vec<u32> {
        t.cpus.iter().map(|c| c.apic_id).collect()
    }

    #[test]
    fn qemu_like_table() {
        // What QEMU's pc machine emits for -smp 4: four local APICs, one I/O APIC, overrides.
        let mut m = Madt::new(0xFEE0_0000, 1);
        for i in 0..4 {
            m = m.lapic(i, i, 1);
        }
        let m = m
            .ioapic(0, 0xFEC0_0000, 0)
            .raw(&[2, 10, 0, 0, 2, 0, 0, 0, 0, 0])
            .raw(&[2, 10, 0, 9, 9, 0, 0, 0, 0x0D, 0])
            .raw(&[4, 6, 0xFF, 0, 0, 1]);
        let t = interpret(&m.bytes(), 0, false).unwrap();
        assert_eq!(ids(&t), [0, 1, 2, 3]);
        assert_eq!(t.cpus[2].acpi_uid, 2);
        assert_eq!(
            t.io_apics.as_slice(),
            [IoApic {
                id: 0,
                address: 0xFEC0_0000,
                gsi_base: 0
            }]
        );
        assert_eq!(t.overrides.len(), 2);
        assert_eq!(
            t.overrides[0],
            InterruptOverride {
                irq: 0,
                gsi: 2,
                flags: 0
            }
        );
        assert_eq!(t.overrides[1].flags, 0x0D);
        assert_eq!(t.local_apic_phys, 0xFEE0_0000);
        assert!(t.has_8259 && t.bsp_listed);
        assert_eq!((t.online_capable, t.skipped_cpus), (0, 0));
    }

    #[test]
    fn bsp_comes_first_and_order_is_kept() {
        let m = Madt::new(0xFEE0_0000, 0)
            .lapic(0, 4, 1)
            .lapic(1, 2, 1)
            .lapic(2, 6, 1)
            .lapic(3, 0, 1);
        let t = interpret(&m.bytes(), 6, false).unwrap();
        assert_eq!(ids(&t), [6, 4, 2, 0]);
        assert_eq!(t.index_of(2), Some(2));
        assert_eq!(t.index_of(7), None);
    }

    #[test]
    fn disabled_online_capable_and_invalid_entries() {
        let m = Madt::new(0xFEE0_0000, 0)
            .lapic(0, 0, 1)
            .lapic(1, 1, 0) // absent
            .lapic(2, 2, 2) // online capable, not enabled
            .lapic(3, 0xFF, 1) // not a CPU
            .x2apic(4, u32::MAX, 1) // not a CPU
            .lapic(5, 3, 1);
        let t = interpret(&m.bytes(), 0, true).unwrap();
        assert_eq!(ids(&t), [0, 3]);
        assert_eq!(t.online_capable, 1);
    }

    #[test]
    fn x2apic_entries_and_duplicates() {
        // Firmware lists CPUs with ids < 255 in both forms; 300 only as x2APIC.
        let m = Madt::new(0xFEE0_0000, 0)
            .lapic(0, 0, 1)
            .lapic(1, 1, 1)
            .x2apic(0, 0, 1)
            .x2apic(1, 1, 1)
            .x2apic(2, 300, 1);
        let bytes = m.bytes();
        let t = interpret(&bytes, 0, true).unwrap();
        assert_eq!(ids(&t), [0, 1, 300]);
        assert_eq!(t.cpus[2].acpi_uid, 2);
        // Without x2APIC an id above 254 cannot be reached by an IPI.
        let t = interpret(&bytes, 0, false).unwrap();
        assert_eq!(ids(&t), [0, 1]);
        assert_eq!(t.skipped_cpus, 1);
    }

    #[test]
    fn local_apic_address_override() {
        let mut ovr = vec![5, 12, 0, 0];
        ovr.extend_from_slice(&0x1_2345_6000u64.to_le_bytes());
        let m = Madt::new(0xFEE0_0000, 0).lapic(0, 0, 1).raw(&ovr);
        assert_eq!(
            interpret(&m.bytes(), 0, false).unwrap().local_apic_phys,
            0x1_2345_6000
        );
    }

    #[test]
    fn limit_keeps_the_bsp() {
        // 300 enabled x2APIC CPUs, BSP listed last: 256 kept, BSP first, 44 skipped.
        let mut m = Madt::new(0xFEE0_0000, 0);
        for i in 0..300 {
            m = m.x2apic(i, 1000 + i, 1);
        }
        let t = interpret(&m.bytes(), 1299, true).unwrap();
        assert_eq!(t.cpus.len(), MAX_CPUS);
        assert_eq!(t.cpus[0].apic_id, 1299);
        assert_eq!(t.cpus[1].apic_id, 1000);
        assert_eq!(t.cpus[255].apic_id, 1254);
        assert_eq!(t.skipped_cpus, 44);
    }

    #[test]
    fn limit_with_unlisted_bsp() {
        let mut m = Madt::new(0xFEE0_0000, 0);
        for i in 0..300 {
            m = m.x2apic(i, 1000 + i, 1);
        }
        let t = interpret(&m.bytes(), 7, true).unwrap();
        assert_eq!(t.cpus.len(), MAX_CPUS);
        assert_eq!(
            t.cpus[0],
            Cpu {
                apic_id: 7,
                acpi_uid: u32::MAX
            }
        );
        assert!(!t.bsp_listed);
        assert_eq!(t.skipped_cpus, 45);
    }

    #[test]
    fn exactly_255_cpus() {
        let mut m = Madt::new(0xFEE0_0000, 0);
        for i in 0..255u8 {
            m = m.lapic(i, i, 1);
        }
        let t = interpret(&m.bytes(), 0, false).unwrap();
        assert_eq!(t.cpus.len(), 255);
        assert_eq!(t.skipped_cpus, 0);
    }

    #[test]
    fn single_cpu() {
        let t = interpret(&Madt::new(0xFEE0_0000, 0).lapic(0, 0, 1).bytes(), 0, false).unwrap();
        assert_eq!(ids(&t), [0]);
    }

    #[test]
    fn malformed_tables_are_rejected_not_looped_on() {
        // Zero-length entry (would loop forever in a naive walker).
        let bad = Madt::new(0xFEE0_0000, 0)
            .lapic(0, 0, 1)
            .raw(&[0x80, 0])
            .bytes();
        assert!(matches!(
            interpret(&bad, 0, false),
            Err(Error::MalformedMadt)
        ));
        // Entry running past the end.
        let bad = Madt::new(0xFEE0_0000, 0).raw(&[0, 8, 0, 0]).bytes();
        assert!(matches!(
            interpret(&bad, 0, false),
            Err(Error::MalformedMadt)
        ));
        // Local APIC entry too short for its type.
        let bad = Madt::new(0xFEE0_0000, 0).raw(&[0, 4, 0, 0]).bytes();
        assert!(matches!(
            interpret(&bad, 0, false),
            Err(Error::MalformedMadt)
        ));
        // Header length disagreeing with the slice.
        let mut bad = Madt::new(0xFEE0_0000, 0).lapic(0, 0, 1).bytes();
        bad.push(0);
        assert!(matches!(
            interpret(&bad, 0, false),
            Err(Error::MalformedMadt)
        ));
        // Unknown types are skipped by their length.
        let ok = Madt::new(0xFEE0_0000, 0)
            .raw(&[0x7F, 3, 0])
            .lapic(0, 0, 1)
            .bytes();
        assert_eq!(interpret(&ok, 0, false).unwrap().cpus.len(), 1);
    }

    #[test]
    fn disabled_bsp_entry_still_counts() {
        let t = interpret(
            &Madt::new(0xFEE0_0000, 0)
                .lapic(0, 0, 0)
                .lapic(1, 1, 1)
                .bytes(),
            0,
            false,
        )
        .unwrap();
        assert_eq!(ids(&t), [0, 1]);
        assert!(t.bsp_listed);
    }
}
