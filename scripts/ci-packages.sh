#!/usr/bin/env bash
# Sourced by test.sh: installs the Debian packages the test suite needs when they are
# missing and we are root (CI runs as root on a fresh machine); otherwise only says what
# is missing, and the tests that need it fail with that message.
# One function per need; helpers adding a system package add a line to ensure_ci_packages.

_apt_install() {
    # _apt_install CHECK_FILE PACKAGE...: install PACKAGE... unless CHECK_FILE exists.
    local check="$1"; shift
    [ -e "$check" ] && return 0
    if [ "$(id -u)" != "0" ] || ! command -v apt-get >/dev/null; then
        echo "ci-packages: $check is missing; install: $*" >&2
        return 0
    fi
    echo "ci-packages: installing $*" >&2
    if [ -z "${_APT_UPDATED:-}" ]; then
        apt-get update -qq >&2
        _APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >&2
}

ensure_ci_packages() {
    # Browser tests of the transparency page: Debian's Chromium and its driver (Selenium
    # is given these paths explicitly and never downloads a browser or driver).
    _apt_install /usr/bin/chromedriver chromium chromium-driver
    # The ledger's tests also run on PostgreSQL: they start a throwaway cluster from these
    # binaries (dpgate_server/ledger/local_postgres.py), never the packaged one on 5432.
    _apt_install /usr/lib/postgresql/15/bin/initdb postgresql-15
}
