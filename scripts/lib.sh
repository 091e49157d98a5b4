# scripts/lib.sh: shell helpers shared by the scripts in this folder (sourced, not run):
# where the repository and cargo's target directory are, and installing missing tools.
# shellcheck shell=bash

DOMINO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# Cargo's target directory, as cargo picks it.
target_dir() {
    local dir="${CARGO_TARGET_DIR:-$DOMINO_ROOT/target}"
    case "$dir" in
        /*) printf '%s\n' "$dir" ;;
        *) printf '%s\n' "$DOMINO_ROOT/$dir" ;;
    esac
}

# ensure_packages CHECK:PACKAGE ...: installs each Debian PACKAGE whose CHECK is missing.
# CHECK is a command name, or a path (starting with /) that the package provides.
# Quiet when nothing is missing; one line, and apt's log only on failure, otherwise.
ensure_packages() {
    local missing=() pair check pkg
    for pair in "$@"; do
        check="${pair%%:*}"
        pkg="${pair#*:}"
        if [[ "$check" == /* ]]; then
            [[ -e "$check" ]] && continue
        else
            command -v "$check" >/dev/null 2>&1 && continue
        fi
        [[ " ${missing[*]-} " == *" $pkg "* ]] || missing+=("$pkg")
    done
    ((${#missing[@]})) || return 0

    local sudo=()
    if ((EUID != 0)); then
        if command -v sudo >/dev/null 2>&1; then
            sudo=(sudo -n)
        else
            echo "scripts: missing ${missing[*]}; install them (apt-get install ${missing[*]}) and retry" >&2
            return 1
        fi
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "scripts: missing ${missing[*]}, and there is no apt-get here to install them" >&2
        return 1
    fi
    echo "scripts: installing ${missing[*]} ..." >&2
    local log
    log="$(mktemp)"
    if ! { "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
            --no-install-recommends "${missing[@]}"; } >"$log" 2>&1; then
        cat "$log" >&2
        rm -f "$log"
        echo "scripts: installing ${missing[*]} failed" >&2
        return 1
    fi
    rm -f "$log"
}

# QEMU, for every boot.
ensure_qemu() {
    ensure_packages qemu-system-x86_64:qemu-system-x86
}

# GRUB and the ISO tools, for scripts/iso (BIOS GRUB modules come from grub-pc-bin).
ensure_grub() {
    ensure_packages grub-mkrescue:grub-common /usr/lib/grub/i386-pc/multiboot2.mod:grub-pc-bin \
        xorriso:xorriso mformat:mtools
}

# linux_kernel: prints the path of Debian's kernel image (the package linux-image-amd64
# depends on), fetched with `apt-get download` into the target directory and unpacked there
# with dpkg-deb when missing; never installed on the host. Messages go to stderr.
# For the Linux engine (scripts/run --engine linux) and scripts/linux-pipe.
linux_kernel() {
    local dir found pkg
    dir="$(target_dir)/linux-kernel"
    found="$(compgen -G "$dir/boot/vmlinuz-*" | sort -V | tail -n 1)" || true
    if [[ -n "$found" ]]; then
        printf '%s\n' "$found"
        return 0
    fi
    local sudo=()
    ((EUID == 0)) || sudo=(sudo -n)
    # The image package the meta-package names, e.g. linux-image-6.1.0-57-amd64.
    image_package() {
        apt-cache depends linux-image-amd64 2>/dev/null |
            sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*\).*$/\1/p' | head -n 1
    }
    pkg="$(image_package)"
    if [[ -z "$pkg" ]]; then
        echo "scripts: updating apt's package lists to find linux-image-amd64 ..." >&2
        "${sudo[@]}" apt-get update -qq >&2 || return 1
        pkg="$(image_package)"
    fi
    if [[ -z "$pkg" ]]; then
        echo "scripts: apt knows no linux-image-amd64 to take the kernel from" >&2
        return 1
    fi
    echo "scripts: fetching $pkg (Debian's kernel, not installed) into $dir ..." >&2
    rm -rf "$dir/deb"
    mkdir -p "$dir/deb"
    (cd "$dir/deb" && apt-get download -qq "$pkg" >&2) || return 1
    dpkg-deb --fsys-tarfile "$dir"/deb/*.deb | tar -x -C "$dir" --wildcards './boot/vmlinuz-*' ||
        return 1
    rm -rf "$dir/deb"
    found="$(compgen -G "$dir/boot/vmlinuz-*" | sort -V | tail -n 1)" || true
    [[ -n "$found" ]] || { echo "scripts: $pkg held no /boot/vmlinuz-*" >&2; return 1; }
    printf '%s\n' "$found"
}
