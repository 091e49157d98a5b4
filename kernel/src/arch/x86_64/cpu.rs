//! Small processor facts and controls: identity of the emulator or hypervisor we run on,
//! the TSC, and stopping the machine.

use abi::tool::console::{DEBUG_EXIT_PORT, ExitCode};
use x86_64::instructions::port::Port;

/// What [`protect_this_cpu`] turned on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Protections {
    pub smep: bool,
    pub smap: bool,
    pub umip: bool,
}

/// Turns on this CPU's protections of the hypervisor from its guests, where the CPU has
/// them (QEMU's `-cpu max` does): SMEP (ring 0 never executes a guest page), SMAP (ring 0
/// touches a guest page only inside the guest-memory copy, which sets RFLAGS.AC) and UMIP
/// (`sgdt`, `sidt`, `sldt`, `smsw`, `str` fault in ring 3 instead of telling a guest where
/// the hypervisor's tables are). FSGSBASE stays off, so a guest cannot set its own FS or GS
/// base (the entry code tells the hypervisor's GS base from a guest's by its sign), and TSD
/// off (guests read the TSC, as the time protocol expects).
pub fn protect_this_cpu() -> Protections {
    use x86_64::registers::control::{Cr4, Cr4Flags};
    let leaf7 = core::arch::x86_64::__cpuid_count(7, 0);
    let have = Protections {
        smep: leaf7.ebx & (1 << 7) != 0,
        smap: leaf7.ebx & (1 << 20) != 0,
        umip: leaf7.ecx & (1 << 2) != 0,
    };
    let mut flags = Cr4::read();
    flags.set(Cr4Flags::SUPERVISOR_MODE_EXECUTION_PROTECTION, have.smep);
    flags.set(Cr4Flags::SUPERVISOR_MODE_ACCESS_PREVENTION, have.smap);
    flags.set(Cr4Flags::USER_MODE_INSTRUCTION_PREVENTION, have.umip);
    flags.remove(Cr4Flags::FSGSBASE | Cr4Flags::TIMESTAMP_DISABLE);
    // SAFETY: the hypervisor never executes guest pages, and touches them only through
    // `copy_user`, which sets AC; it uses none of the instructions UMIP restricts in ring 3,
    // nor RDFSBASE and friends.
    unsafe { Cr4::write(flags) };
    have
}

/// Reads the time-stamp counter.
pub fn rdtsc() -> u64 {
    // SAFETY: RDTSC has no side effects and is allowed at CPL 0 whatever CR4.TSD says.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// The accelerator underneath, from the CPUID hypervisor leaf: "tcg", "kvm", another
/// hypervisor's name in lower case, or "none" on bare metal.
pub fn accelerator() -> &'static str {
    // CPUID.1:ECX bit 31 is set by every hypervisor; leaf 0x4000_0000 then names it.
    let leaf1 = core::arch::x86_64::__cpuid(1);
    if leaf1.ecx & (1 << 31) == 0 {
        return "none";
    }
    let id = core::arch::x86_64::__cpuid(0x4000_0000);
    let mut name = [0u8; 12];
    name[0..4].copy_from_slice(&id.ebx.to_le_bytes());
    name[4..8].copy_from_slice(&id.ecx.to_le_bytes());
    name[8..12].copy_from_slice(&id.edx.to_le_bytes());
    match &name {
        b"TCGTCGTCGTCG" => "tcg",
        b"KVMKVMKVM\0\0\0" => "kvm",
        b"Microsoft Hv" => "hyperv",
        b"VMwareVMware" => "vmware",
        b"XenVMMXenVMM" => "xen",
        _ => "other",
    }
}

/// Stops the machine with `code`: QEMU's `isa-debug-exit` first (the runner decodes it),
/// then a reset through the PCI reset-control port and the keyboard controller for machines
/// without that device, and finally a halt loop.
pub fn exit(code: ExitCode) -> ! {
    log::logger().flush();
    // SAFETY: port 0xf4 is QEMU's isa-debug-exit, absent elsewhere (a write to an unclaimed
    // port is ignored); 0xcf9 is the PCI reset-control register (value 0x06: hard reset);
    // 0x64 command 0xfe pulses the reset line. Stopping the machine is what we intend.
    unsafe {
        Port::<u32>::new(DEBUG_EXIT_PORT).write(code as u32);
        Port::<u8>::new(0xcf9).write(0x06);
        Port::<u8>::new(0x64).write(0xfe);
    }
    halt_forever()
}

/// Halts this CPU for good, with interrupts off.
pub fn halt_forever() -> ! {
    loop {
        x86_64::instructions::interrupts::disable();
        x86_64::instructions::hlt();
    }
}

/// Reads the CMOS real-time clock, waiting out an update in progress and reading until two
/// reads agree (the registers change under a reader at each second).
pub fn read_rtc() -> kerncore::rtc::RtcReading {
    let read = |reg: u8| -> u8 {
        // SAFETY: ports 0x70/0x71 are the CMOS index and data ports; selecting a clock
        // register (NMI-disable bit clear, as it was) and reading it has no other effect.
        unsafe {
            Port::<u8>::new(0x70).write(reg);
            Port::<u8>::new(0x71).read()
        }
    };
    let snapshot = || {
        while read(0x0a) & 0x80 != 0 {
            core::hint::spin_loop();
        }
        [
            read(0x00),
            read(0x02),
            read(0x04),
            read(0x07),
            read(0x08),
            read(0x09),
        ]
    };
    let mut regs = snapshot();
    loop {
        let again = snapshot();
        if again == regs {
            break;
        }
        regs = again;
    }
    let status_b = read(0x0b);
    kerncore::rtc::RtcReading {
        seconds: regs[0],
        minutes: regs[1],
        hours: regs[2],
        day: regs[3],
        month: regs[4],
        year: regs[5],
        bcd: status_b & 0x04 == 0,
        twelve_hour: status_b & 0x02 == 0,
    }
}

/// Masks every line of both 8259 PICs: Domino takes interrupts from the local APIC only.
pub fn mask_8259() {
    // SAFETY: ports 0x21 and 0xa1 are the 8259 data ports; writing 0xff masks all lines and
    // touches nothing else.
    unsafe {
        Port::<u8>::new(0x21).write(0xff);
        Port::<u8>::new(0xa1).write(0xff);
    }
}
