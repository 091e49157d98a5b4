/*
 * compare: the Linux column of `scripts/bench compare` (the Xen paper's table: Linux beside
 * Domino on the same QEMU). Runs as /init (PID 1) of a Linux guest on 2 CPUs that
 * scripts/linux-pipe/run --compare boots, and prints one line per figure:
 *
 *   compare NAME VALUE UNIT
 *
 *   null_call           ns      syscall(SYS_getppid), the paper's lmbench "null call"
 *   ctx_2p_0K .. 64K    ns      lmbench lat_ctx-like: two processes on CPU 0 pass a token
 *                               over pipes, each summing its own working set (0, 16, 64 KiB)
 *                               when it has the token; minus the same work done by one
 *                               process alone (the pipe and the summing), per switch
 *   pipe_rtt_same_cpu   ns      a 1-byte pipe round trip, both processes pinned to CPU 0
 *   pipe_rtt_cross_cpu  ns      the same, parent on CPU 0, child on CPU 1
 *   fork_exit           ns      fork, the child _exits, the parent waits
 *   fork_exec           ns      fork, the child execs this program (which exits at once)
 *   pipe_bandwidth      bytes_per_s  32 MiB in 64 KiB writes, reader and writer unpinned
 *
 * then `compare_done`, and the VM powers off. On an error it prints `compare_error: ...`.
 *
 * Build: gcc -O2 -static -o compare compare.c
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void power_off(void)
{
    fflush(stdout);
    sync();
    if (getpid() == 1)
        reboot(RB_POWER_OFF);
    exit(1);
}

static void fail(const char *fmt, ...)
{
    va_list ap;
    int err = errno;
    printf("compare_error: ");
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf(" (%s)\n", strerror(err));
    power_off();
}

static void console(void)
{
    if (fcntl(1, F_GETFD) != -1)
        return;
    mkdir("/dev", 0755);
    mount("devtmpfs", "/dev", "devtmpfs", 0, NULL);
    int fd = open("/dev/console", O_RDWR | O_NOCTTY);
    if (fd < 0)
        power_off();
    dup2(fd, 0);
    dup2(fd, 1);
    dup2(fd, 2);
    if (fd > 2)
        close(fd);
}

static cpu_set_t all_cpus;

static void pin(int cpu)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (sched_setaffinity(0, sizeof set, &set) != 0)
        fail("sched_setaffinity(cpu %d)", cpu);
}

static void unpin(void)
{
    if (sched_setaffinity(0, sizeof all_cpus, &all_cpus) != 0)
        fail("sched_setaffinity(all)");
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void put(int fd)
{
    char c = 'x';
    while (write(fd, &c, 1) != 1)
        if (errno != EINTR)
            fail("write");
}

static void get(int fd)
{
    char c;
    ssize_t n;
    while ((n = read(fd, &c, 1)) != 1)
        if (n == 0 || errno != EINTR)
            fail("read");
}

static void report(const char *name, uint64_t value, const char *unit)
{
    printf("compare %s %llu %s\n", name, (unsigned long long)value, unit);
}

static void wait_child(pid_t child)
{
    int status;
    if (waitpid(child, &status, 0) != child || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
        fail("child");
}

static uint64_t null_call(void)
{
    enum { N = 200000 };
    for (int i = 0; i < 1000; i++)
        syscall(SYS_getppid);
    uint64_t t = now_ns();
    for (int i = 0; i < N; i++)
        syscall(SYS_getppid);
    return (now_ns() - t) / N;
}

/* Sums a working set of `bytes` (touching every cache line), volatile so it is done. */
static volatile uint64_t sink;
static void touch(const uint64_t *ws, size_t bytes)
{
    uint64_t s = 0;
    for (size_t i = 0; i < bytes / 8; i += 8)
        s += ws[i];
    sink += s;
}

/* lat_ctx-like: ns per switch with a working set of `kib` KiB, both on CPU 0. */
static uint64_t ctx(size_t kib)
{
    enum { WARMUP = 500, N = 5000 };
    size_t bytes = kib * 1024;
    uint64_t *ws = calloc(1, bytes + 64);
    if (!ws)
        fail("calloc");
    pin(0);
    /* The overhead: one process writes and reads its own pipe and sums, per pass. */
    int self[2];
    if (pipe(self) != 0)
        fail("pipe");
    uint64_t t = now_ns();
    for (int i = 0; i < N; i++) {
        put(self[1]);
        get(self[0]);
        touch(ws, bytes);
    }
    uint64_t overhead = (now_ns() - t) / N;
    close(self[0]);
    close(self[1]);

    int ping[2], pong[2];
    if (pipe(ping) != 0 || pipe(pong) != 0)
        fail("pipe");
    pid_t child = fork();
    if (child < 0)
        fail("fork");
    if (child == 0) {
        uint64_t *own = calloc(1, bytes + 64);
        if (!own)
            _exit(1);
        for (int i = 0; i < WARMUP + N; i++) {
            get(ping[0]);
            touch(own, bytes);
            put(pong[1]);
        }
        _exit(0);
    }
    for (int i = 0; i < WARMUP; i++) {
        put(ping[1]);
        touch(ws, bytes);
        get(pong[0]);
    }
    t = now_ns();
    for (int i = 0; i < N; i++) {
        put(ping[1]);
        touch(ws, bytes);
        get(pong[0]);
    }
    uint64_t round = (now_ns() - t) / N; /* two switches, two passes */
    wait_child(child);
    close(ping[0]);
    close(ping[1]);
    close(pong[0]);
    close(pong[1]);
    free(ws);
    unpin();
    return round > 2 * overhead ? (round - 2 * overhead) / 2 : 0;
}

static uint64_t pipe_rtt(int parent_cpu, int child_cpu)
{
    enum { WARMUP = 1000, N = 10000 };
    int ping[2], pong[2];
    if (pipe(ping) != 0 || pipe(pong) != 0)
        fail("pipe");
    pid_t child = fork();
    if (child < 0)
        fail("fork");
    if (child == 0) {
        pin(child_cpu);
        for (int i = 0; i < WARMUP + N; i++) {
            get(ping[0]);
            put(pong[1]);
        }
        _exit(0);
    }
    pin(parent_cpu);
    for (int i = 0; i < WARMUP; i++) {
        put(ping[1]);
        get(pong[0]);
    }
    uint64_t t = now_ns();
    for (int i = 0; i < N; i++) {
        put(ping[1]);
        get(pong[0]);
    }
    uint64_t rtt = (now_ns() - t) / N;
    wait_child(child);
    close(ping[0]);
    close(ping[1]);
    close(pong[0]);
    close(pong[1]);
    unpin();
    return rtt;
}

static uint64_t fork_exit(void)
{
    enum { N = 500 };
    pin(0);
    uint64_t t = now_ns();
    for (int i = 0; i < N; i++) {
        pid_t child = fork();
        if (child < 0)
            fail("fork");
        if (child == 0)
            _exit(0);
        wait_child(child);
    }
    uint64_t ns = (now_ns() - t) / N;
    unpin();
    return ns;
}

static uint64_t fork_exec(const char *self)
{
    enum { N = 100 };
    pin(0);
    uint64_t t = now_ns();
    for (int i = 0; i < N; i++) {
        pid_t child = fork();
        if (child < 0)
            fail("fork");
        if (child == 0) {
            execl(self, self, "exit", (char *)NULL);
            _exit(1);
        }
        wait_child(child);
    }
    uint64_t ns = (now_ns() - t) / N;
    unpin();
    return ns;
}

static uint64_t pipe_bandwidth(void)
{
    enum { CHUNK = 64 * 1024, TOTAL = 32 * 1024 * 1024 };
    static char buf[CHUNK];
    int p[2];
    if (pipe(p) != 0)
        fail("pipe");
    pid_t child = fork();
    if (child < 0)
        fail("fork");
    if (child == 0) {
        close(p[0]);
        for (size_t sent = 0; sent < TOTAL;) {
            ssize_t n = write(p[1], buf, CHUNK);
            if (n < 0 && errno != EINTR)
                _exit(1);
            if (n > 0)
                sent += (size_t)n;
        }
        _exit(0);
    }
    close(p[1]);
    uint64_t t = now_ns();
    size_t got = 0;
    for (;;) {
        ssize_t n = read(p[0], buf, CHUNK);
        if (n == 0)
            break;
        if (n < 0) {
            if (errno == EINTR)
                continue;
            fail("read");
        }
        got += (size_t)n;
    }
    uint64_t ns = now_ns() - t;
    wait_child(child);
    close(p[0]);
    if (got != TOTAL)
        fail("pipe bandwidth: got %zu bytes of %d", got, TOTAL);
    return (uint64_t)got * 1000000000u / (ns ? ns : 1);
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "exit") == 0)
        return 0; /* the exec of fork_exec */
    console();
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (sched_getaffinity(0, sizeof all_cpus, &all_cpus) != 0)
        fail("sched_getaffinity");
    if (CPU_COUNT(&all_cpus) < 2)
        fail("compare needs 2 CPUs, has %d", CPU_COUNT(&all_cpus));

    report("null_call", null_call(), "ns");
    report("ctx_2p_0K", ctx(0), "ns");
    report("ctx_2p_16K", ctx(16), "ns");
    report("ctx_2p_64K", ctx(64), "ns");
    report("pipe_rtt_same_cpu", pipe_rtt(0, 0), "ns");
    report("pipe_rtt_cross_cpu", pipe_rtt(0, 1), "ns");
    report("fork_exit", fork_exit(), "ns");
    report("fork_exec", fork_exec(argv[0]), "ns");
    report("pipe_bandwidth", pipe_bandwidth(), "bytes_per_s");
    printf("compare_done\n");
    power_off();
    return 0;
}
