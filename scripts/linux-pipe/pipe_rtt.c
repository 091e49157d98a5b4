/*
 * pipe_rtt: the Linux reference for Domino's event-channel round trip
 * (docs/DESIGN.md "Performance targets", row "event-channel round trip, one CPU": ratio to
 * a Linux pipe round trip on the same QEMU).
 *
 * Runs as /init (PID 1) of a Linux guest that scripts/linux-pipe/run boots in QEMU. Two
 * processes bounce one byte over two pipes, WARMUP round trips and then ROUNDS timed ones
 * (CLOCK_MONOTONIC), and one line per case goes to the console:
 *
 *   pipe_rtt_ns=NS cpus=N           unpinned (the scheduler places both processes)
 *   pipe_rtt_same_cpu_ns=NS         with 2+ CPUs: both pinned to CPU 0
 *   pipe_rtt_cross_cpu_ns=NS        with 2+ CPUs: parent on CPU 0, child on CPU 1
 *
 * then `pipe_rtt_done`, and the VM powers off. On an error it prints `pipe_rtt_error: ...`
 * and powers off as well, so QEMU always exits.
 *
 * Build: gcc -O2 -static -o pipe_rtt pipe_rtt.c
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
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define WARMUP 1000
#define ROUNDS 20000

static void power_off(void)
{
    fflush(stdout);
    sync();
    if (getpid() == 1)
        reboot(RB_POWER_OFF);
    exit(1); /* not init (a test run on the host), or power-off failed */
}

static void fail(const char *fmt, ...)
{
    va_list ap;
    int err = errno;
    printf("pipe_rtt_error: ");
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf(" (%s)\n", strerror(err));
    power_off();
}

/* stdin/stdout/stderr on the console. The kernel opens /dev/console for init when the
 * initramfs has one; when it does not, devtmpfs provides it. */
static void console(void)
{
    if (fcntl(1, F_GETFD) != -1)
        return;
    mkdir("/dev", 0755);
    mount("devtmpfs", "/dev", "devtmpfs", 0, NULL);
    int fd = open("/dev/console", O_RDWR | O_NOCTTY);
    if (fd < 0)
        fd = open("/dev/ttyS0", O_RDWR | O_NOCTTY);
    if (fd < 0)
        power_off(); /* nowhere to say anything */
    dup2(fd, 0);
    dup2(fd, 1);
    dup2(fd, 2);
    if (fd > 2)
        close(fd);
}

static void pin(int cpu)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (sched_setaffinity(0, sizeof set, &set) != 0)
        fail("sched_setaffinity(cpu %d)", cpu);
}

/* The CPUs init may run on, as it started. */
static cpu_set_t all_cpus;

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

static void put(int fd, char c)
{
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

/* One measurement: ns per round trip. parent_cpu/child_cpu < 0 leave that side unpinned. */
static uint64_t measure(int parent_cpu, int child_cpu)
{
    int ping[2], pong[2];
    if (pipe(ping) != 0 || pipe(pong) != 0)
        fail("pipe");
    pid_t child = fork();
    if (child < 0)
        fail("fork");
    if (child == 0) {
        close(ping[1]);
        close(pong[0]);
        if (child_cpu >= 0)
            pin(child_cpu);
        for (int i = 0; i < WARMUP + ROUNDS; i++) {
            get(ping[0]);
            put(pong[1], 'b');
        }
        _exit(0);
    }
    close(ping[0]);
    close(pong[1]);
    if (parent_cpu >= 0)
        pin(parent_cpu);
    for (int i = 0; i < WARMUP; i++) {
        put(ping[1], 'a');
        get(pong[0]);
    }
    uint64_t start = now_ns();
    for (int i = 0; i < ROUNDS; i++) {
        put(ping[1], 'a');
        get(pong[0]);
    }
    uint64_t elapsed = now_ns() - start;
    int status;
    if (waitpid(child, &status, 0) != child || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
        fail("child");
    close(ping[1]);
    close(pong[0]);
    unpin();
    return elapsed / ROUNDS;
}

int main(void)
{
    console();
    setvbuf(stdout, NULL, _IOLBF, 0);

    if (sched_getaffinity(0, sizeof all_cpus, &all_cpus) != 0)
        fail("sched_getaffinity");
    int cpus = CPU_COUNT(&all_cpus);

    printf("pipe_rtt_ns=%llu cpus=%d\n", (unsigned long long)measure(-1, -1), cpus);
    if (cpus >= 2) {
        printf("pipe_rtt_same_cpu_ns=%llu\n", (unsigned long long)measure(0, 0));
        printf("pipe_rtt_cross_cpu_ns=%llu\n", (unsigned long long)measure(0, 1));
    }
    printf("pipe_rtt_done\n");
    power_off();
    return 0;
}
