//! `hostile-priv`: executes an instruction reserved to ring 0, which must get the domain killed
//! with "privileged instruction". Argument `insn`: 0 = `cli` (default), 1 = `hlt`,
//! 2 = `out` to QEMU's isa-debug-exit port (0xf4, which would end the whole machine),
//! 3 = `mov rax, cr3`. vCPU 0 acts; other vCPUs park. If it survives it shuts down with
//! `hostile::SURVIVED`. Expected fate: killed.
#![no_std]
#![no_main]

use core::arch::asm;

use workloads::{entry, hostile, println, rt};

entry!(main);

fn main(vcpu: usize) -> u64 {
    if vcpu != 0 {
        rt::park(vcpu);
    }
    let insn = workloads::shared::arg("insn", 0);
    println!("executing privileged instruction {insn} in ring 3");
    match insn {
        // SAFETY: #GP in ring 3; should it run, it only waits for the next interrupt.
        1 => unsafe { asm!("hlt", options(nomem, nostack)) },
        // SAFETY: #GP in ring 3 without I/O permission; it touches no guest memory.
        2 => unsafe {
            asm!("out dx, al", in("dx") abi::tool::console::DEBUG_EXIT_PORT, in("al") 0u8,
                 options(nomem, nostack))
        },
        3 => {
            let _cr3: u64;
            // SAFETY: #GP in ring 3; it would only read CR3 into a register.
            unsafe { asm!("mov {}, cr3", out(reg) _cr3, options(nomem, nostack)) };
        }
        // SAFETY: #GP in ring 3 with IOPL 0; should it run, it only masks this guest's
        // own interrupts.
        _ => unsafe { asm!("cli", options(nomem, nostack)) },
    }
    hostile::survived("a privileged instruction")
}
