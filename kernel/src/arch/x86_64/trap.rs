//! Traps: the interrupt descriptor table, its 256 entry stubs, and the dispatcher.
//!
//! The stubs live in `entry.rs`. Each pushes a zero where the CPU pushes no error code, then
//! its vector, and jumps to `trap_common`, which saves every general register and calls
//! `trap_dispatch` (in `crate::trap`, above this layer) with a pointer to the resulting [`TrapFrame`].
//!
//! Stacks: a trap from ring 3 lands on this CPU's kernel stack (TSS.RSP0), where the
//! `syscall` entry puts its frame too, and every handler runs there with interrupts off. A
//! trap in ring 0 pushes onto the stack in use: only interrupts in the idle loop's `hlt`
//! (an `asm!` block that may use the stack, so no red zone is live) and page faults in the
//! guest-memory copy (assembly, no red zone) are expected there; anything else is fatal.
//! NMI, #DB, double fault and machine check use IST stacks, since they can arrive at an
//! instruction whose stack is not the hypervisor's (#DB or NMI on the first instruction of
//! the `syscall` entry, where RSP is still the guest's).

use abi::tool::console::ExitCode;
use x86_64::VirtAddr;

/// IST slot (1-based, as the IDT encodes it) for #DB.
pub const IST_DEBUG: u16 = 1;
/// IST slot for NMI.
pub const IST_NMI: u16 = 2;
/// IST slot for double fault.
pub const IST_DOUBLE_FAULT: u16 = 3;
/// IST slot for machine check.
pub const IST_MACHINE_CHECK: u16 = 4;

/// The registers saved on a trap, in the order `trap_common` pushes them (lowest address
/// first), followed by what the stub and the CPU pushed.
///
/// A hypercall's frame is filled in two steps (`entry.rs`): while the hypercall's own code
/// runs, only RIP, RFLAGS, RSP and the caller-saved registers hold the guest's values; the
/// rest is written before anything else (`syscall_leave`) looks at the frame.
#[repr(C)]
#[derive(Clone, Debug, Default)]
pub struct TrapFrame {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rbp: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rbx: u64,
    pub rax: u64,
    pub vector: u64,
    pub error_code: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

impl TrapFrame {
    /// `self = from.clone()`, register by register, in place. A plain clone of the 176-byte
    /// frame compiles to a call of `memcpy` (and an assignment of one to a `memmove`): under
    /// QEMU TCG each call, its loop and its return are translated blocks that every domain
    /// switch runs cold (the CR3 load empties QEMU's jump cache), about a dozen per copy;
    /// these moves stay inline in the caller's blocks.
    #[inline(always)]
    pub fn copy_from(&mut self, from: &TrapFrame) {
        self.r15 = from.r15;
        self.r14 = from.r14;
        self.r13 = from.r13;
        self.r12 = from.r12;
        self.r11 = from.r11;
        self.r10 = from.r10;
        self.r9 = from.r9;
        self.r8 = from.r8;
        self.rbp = from.rbp;
        self.rdi = from.rdi;
        self.rsi = from.rsi;
        self.rdx = from.rdx;
        self.rcx = from.rcx;
        self.rbx = from.rbx;
        self.rax = from.rax;
        self.vector = from.vector;
        self.error_code = from.error_code;
        self.rip = from.rip;
        self.cs = from.cs;
        self.rflags = from.rflags;
        self.rsp = from.rsp;
        self.ss = from.ss;
    }
}

/// Byte offsets the entry assembly (`entry.rs`) uses, named as Xen names its `UREGS_*`:
/// from the `vector` slot, which is where RSP points when a stub jumps to `trap_common` (the
/// CPU's frame and the stub's two words are all that is on the stack) and again once the
/// exit path has popped the general registers.
pub mod frame {
    use core::mem::offset_of;

    use super::TrapFrame;

    const fn from_vector(field: usize) -> usize {
        field - offset_of!(TrapFrame, vector)
    }

    /// The saved RIP.
    pub const RIP: usize = from_vector(offset_of!(TrapFrame, rip));
    /// The saved CS (its low two bits are the ring the trap came from).
    pub const CS: usize = from_vector(offset_of!(TrapFrame, cs));
    /// The saved RFLAGS.
    pub const RFLAGS: usize = from_vector(offset_of!(TrapFrame, rflags));
    /// The saved RSP.
    pub const RSP: usize = from_vector(offset_of!(TrapFrame, rsp));
    /// What `iretq` needs above the vector and error code: skip this many bytes first.
    pub const IRET_FRAME: usize = RIP;
    /// From the frame's base (the last general register pushed) to the vector slot.
    pub const VECTOR: usize = offset_of!(TrapFrame, vector);

    // `push_gprs` pushes RAX first and R15 last, after the stub's vector and error code and
    // the CPU's (or `syscall_frame`'s) RIP, CS, RFLAGS, RSP, SS: the struct must match.
    const _: () = {
        let gprs = [
            offset_of!(TrapFrame, r15),
            offset_of!(TrapFrame, r14),
            offset_of!(TrapFrame, r13),
            offset_of!(TrapFrame, r12),
            offset_of!(TrapFrame, r11),
            offset_of!(TrapFrame, r10),
            offset_of!(TrapFrame, r9),
            offset_of!(TrapFrame, r8),
            offset_of!(TrapFrame, rbp),
            offset_of!(TrapFrame, rdi),
            offset_of!(TrapFrame, rsi),
            offset_of!(TrapFrame, rdx),
            offset_of!(TrapFrame, rcx),
            offset_of!(TrapFrame, rbx),
            offset_of!(TrapFrame, rax),
        ];
        let mut i = 0;
        while i < gprs.len() {
            assert!(gprs[i] == i * 8);
            i += 1;
        }
        assert!(VECTOR == 15 * 8);
        assert!(offset_of!(TrapFrame, error_code) == VECTOR + 8);
        assert!(RIP == 16 && CS == 24 && RFLAGS == 32 && RSP == 40);
        assert!(offset_of!(TrapFrame, ss) == VECTOR + 48);
        assert!(core::mem::size_of::<TrapFrame>() == VECTOR + 56);
    };
}

impl TrapFrame {
    /// Whether the trap came from ring 3 (a guest).
    pub fn came_from_user(&self) -> bool {
        self.cs & 3 == 3
    }
}

/// Checks a frame about to be restored to ring 3 (by `sysretq` or `iretq`, neither of which
/// may fault in ring 0): guest selectors, a RIP in the guest's half (canonical, so `sysretq`
/// cannot fault on it), a canonical RSP, interrupts on, IOPL 0, not virtual-8086. Hardware-made frames always
/// pass; the check is for frames the hypervisor built or rewrote from what a guest gave it.
pub fn exit_frame_ok(frame: &TrapFrame) -> Result<(), abi::control::KillReason> {
    use x86_64::registers::rflags::RFlags;
    let must_be_clear = RFlags::IOPL_HIGH | RFlags::IOPL_LOW | RFlags::VIRTUAL_8086_MODE;
    // RSP may be anything canonical (a guest's stack is its business); `iretq` with a
    // non-canonical one is not something to find out about in ring 0.
    let rsp_canonical = matches!(frame.rsp >> 47, 0 | 0x1_ffff);
    let ok = frame.rip < abi::layout::USER_LIMIT
        && rsp_canonical
        && frame.cs == u64::from(super::gdt::USER_CODE.0)
        && frame.ss == u64::from(super::gdt::USER_DATA.0)
        && frame.rflags & RFlags::INTERRUPT_FLAG.bits() != 0
        && frame.rflags & must_be_clear.bits() == 0;
    if ok {
        Ok(())
    } else {
        Err(abi::control::KillReason::BadReturn { rip: frame.rip })
    }
}

unsafe extern "C" {
    /// The addresses of the 256 entry stubs, indexed by vector.
    static trap_stub_table: [u64; 256];
}

/// One 64-bit interrupt gate. The `x86_64` crate's IDT types each exception's handler with
/// the `x86-interrupt` ABI, which stable Rust lacks; 256 identical gates to our own stubs
/// are simpler written out.
#[repr(C, align(16))]
#[derive(Clone, Copy)]
struct Gate {
    offset_low: u16,
    selector: u16,
    ist: u8,
    type_attr: u8,
    offset_mid: u16,
    offset_high: u32,
    reserved: u32,
}

impl Gate {
    /// A present ring-0 interrupt gate (IF cleared on entry) to `handler` on IST `ist`.
    fn interrupt(handler: u64, ist: u16) -> Gate {
        Gate {
            offset_low: handler as u16,
            selector: super::gdt::KERNEL_CODE.0,
            ist: ist as u8,
            type_attr: 0x8e,
            offset_mid: (handler >> 16) as u16,
            offset_high: (handler >> 32) as u32,
            reserved: 0,
        }
    }
}

static IDT: spin::Once<[Gate; 256]> = spin::Once::new();

/// Builds the IDT (once, shared by every CPU) and loads it on this CPU.
pub fn load_idt() {
    let idt = IDT.call_once(|| {
        core::array::from_fn(|vector| {
            // SAFETY: `trap_stub_table` is immutable data emitted above.
            let stub = unsafe { trap_stub_table[vector] };
            let ist = match vector {
                1 => IST_DEBUG,
                2 => IST_NMI,
                8 => IST_DOUBLE_FAULT,
                18 => IST_MACHINE_CHECK,
                _ => 0, // TSS.RSP0 from ring 3, the current stack from ring 0
            };
            Gate::interrupt(stub, ist)
        })
    });
    let pointer = x86_64::structures::DescriptorTablePointer {
        limit: (core::mem::size_of_val(idt) - 1) as u16,
        base: VirtAddr::from_ptr(idt.as_ptr()),
    };
    // SAFETY: `pointer` describes a static table of 256 valid gates whose stubs and IST
    // slots are set up (this CPU's TSS is loaded before its IDT).
    unsafe { x86_64::instructions::tables::lidt(&pointer) };
}

const EXCEPTION_NAMES: [&str; 32] = [
    "divide error",
    "debug",
    "NMI",
    "breakpoint",
    "overflow",
    "bound range exceeded",
    "invalid opcode",
    "device not available",
    "double fault",
    "coprocessor segment overrun",
    "invalid TSS",
    "segment not present",
    "stack-segment fault",
    "general protection fault",
    "page fault",
    "reserved",
    "x87 floating-point error",
    "alignment check",
    "machine check",
    "SIMD floating-point error",
    "virtualization exception",
    "control protection",
    "reserved",
    "reserved",
    "reserved",
    "reserved",
    "reserved",
    "reserved",
    "hypervisor injection",
    "VMM communication",
    "security exception",
    "reserved",
];

/// Reports an exception the hypervisor cannot recover from, and stops the machine. The
/// caller has made the console usable first (`console::emergency`).
pub fn fatal_exception(frame: &TrapFrame) -> ! {
    let cr2 = x86_64::registers::control::Cr2::read_raw();
    log::error!(
        "unexpected exception {} ({}), error code {:#x}, at RIP {:#018x}, RSP {:#018x}, \
         CR2 {:#018x}, {} mode",
        frame.vector & 0xff,
        EXCEPTION_NAMES[(frame.vector & 0xff) as usize % 32],
        frame.error_code,
        frame.rip,
        frame.rsp,
        cr2,
        if frame.came_from_user() {
            "guest"
        } else {
            "hypervisor"
        },
    );
    super::exit(ExitCode::Failure)
}
