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
