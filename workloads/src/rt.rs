//! The runtime proper: what runs around a program's `main`, the panic handler, and the global
//! allocator.
//!
//! Every vCPU enters at `_start` (defined by [`crate::entry!`]), which calls [`run`] with the
//! vCPU index. `main` returning ends the whole domain with its return value as the shutdown
//! code, so a program that means to run until Domain0 destroys it simply never returns.

/// Runs `main(vcpu)` and shuts the domain down with the code it returns.
pub fn run(vcpu: usize, main: fn(usize) -> u64) -> ! {
    let code = main(vcpu);
    crate::hypercall::shutdown(code)
}

/// Parks a vCPU that has nothing to do: it takes itself down, or, if the hypervisor refuses,
/// blocks forever (without a timer armed, only an event would wake it, and it blocks again).
pub fn park(vcpu: usize) -> ! {
    let _ = crate::hypercall::vcpu_down(vcpu);
    loop {
        crate::hypercall::block();
    }
}

#[cfg(not(test))]
mod freestanding {
    use core::mem::MaybeUninit;
    use core::panic::PanicInfo;

    use linked_list_allocator::LockedHeap;

    /// The heap behind `alloc`. It starts empty: a program that allocates hands it memory
    /// with [`super::init_heap`] first, so programs that do not allocate carry no heap in
    /// their image (a domain's memory is small). Allocating from an empty heap fails, which
    /// panics, which shuts the domain down with `CRASH`.
    #[global_allocator]
    static HEAP: LockedHeap = LockedHeap::empty();

    pub fn init_heap(region: &'static mut [MaybeUninit<u8>]) {
        HEAP.lock().init_from_slice(region);
    }

    #[panic_handler]
    fn panic(info: &PanicInfo<'_>) -> ! {
        crate::println!("panic: {info}");
        crate::hypercall::shutdown(abi::hypercall::shutdown::CRASH)
    }
}

/// Gives the global allocator its memory; call once, before the first allocation. In test
/// builds `std` allocates and this does nothing.
pub fn init_heap(region: &'static mut [core::mem::MaybeUninit<u8>]) {
    #[cfg(not(test))]
    freestanding::init_heap(region);
    #[cfg(test)]
    let _ = region;
}
