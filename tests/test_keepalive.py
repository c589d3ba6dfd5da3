"""The platform logic of keepalive options, with fake constant tables."""

from __future__ import annotations

import socket
import types

import pytest

from requests_azguard import GuardConfig
from requests_azguard._keepalive import (
    SocketConstants,
    keepalive_options,
    platform_kind,
    socket_options,
    windows_keepalive_vals,
)

# Deliberately odd numbers: a branch that reads the host's socket module
# instead of the table given would produce different tuples.
LINUX = SocketConstants(
    SOL_SOCKET=901,
    SO_KEEPALIVE=902,
    IPPROTO_TCP=903,
    TCP_NODELAY=904,
    TCP_KEEPIDLE=905,
    TCP_KEEPINTVL=906,
    TCP_KEEPCNT=907,
    TCP_USER_TIMEOUT=908,
)
DARWIN = SocketConstants(
    SOL_SOCKET=801,
    SO_KEEPALIVE=802,
    IPPROTO_TCP=803,
    TCP_NODELAY=804,
    TCP_KEEPALIVE=816,
    TCP_KEEPINTVL=817,
    TCP_KEEPCNT=818,
)
WINDOWS = SocketConstants(
    SOL_SOCKET=701,
    SO_KEEPALIVE=702,
    IPPROTO_TCP=703,
    TCP_NODELAY=704,
    TCP_KEEPIDLE=705,
    TCP_KEEPINTVL=706,
    TCP_KEEPCNT=707,
    SIO_KEEPALIVE_VALS=708,
)
CFG = GuardConfig(keepalive_idle=25.0, keepalive_interval=5.0, keepalive_count=4, user_timeout=20.0)


def test_linux_options() -> None:
    assert keepalive_options(CFG, LINUX, "linux") == [
        (901, 902, 1),
        (903, 905, 25),
        (903, 906, 5),
        (903, 907, 4),
        (903, 908, 20000),
    ]


def test_linux_user_timeout_off_means_kernel_default() -> None:
    opts = keepalive_options(CFG.replace(user_timeout=None), LINUX, "linux")
    assert (903, 908, 0) in opts


def test_darwin_idle_is_tcp_keepalive() -> None:
    assert keepalive_options(CFG, DARWIN, "darwin") == [
        (801, 802, 1),
        (803, 816, 25),
        (803, 817, 5),
        (803, 818, 4),
    ]


def test_windows_uses_ioctl_not_options() -> None:
    assert keepalive_options(CFG, WINDOWS, "windows") == [(701, 702, 1)]
    assert windows_keepalive_vals(CFG) == (1, 25000, 5000)
    assert windows_keepalive_vals(CFG.replace(keepalive=False)) is None


def test_keepalive_off() -> None:
    assert keepalive_options(CFG.replace(keepalive=False), LINUX, "linux") == []
    assert socket_options(CFG.replace(keepalive=False), LINUX, "linux") == [(903, 904, 1)]


def test_nodelay_kept_first() -> None:
    assert socket_options(CFG, LINUX, "linux")[0] == (903, 904, 1)


def test_sub_second_durations_round_up() -> None:
    opts = keepalive_options(CFG.replace(keepalive_idle=0.4), LINUX, "linux")
    assert (903, 905, 1) in opts  # never 0: Linux rejects it with EINVAL


def test_from_module_reads_a_fake_module() -> None:
    fake = types.SimpleNamespace(SOL_SOCKET=1, SO_KEEPALIVE=2, IPPROTO_TCP=3, TCP_NODELAY=4)
    consts = SocketConstants.from_module(fake, platform="darwin")
    assert consts.TCP_KEEPALIVE == 0x10  # macOS value when Python lacks the name
    assert consts.TCP_KEEPIDLE is None
    assert SocketConstants.from_module(fake, platform="linux").TCP_KEEPALIVE is None


@pytest.mark.parametrize(
    "name, kind",
    [("linux", "linux"), ("darwin", "darwin"), ("win32", "windows"), ("freebsd14", "other")],
)
def test_platform_kind(name: str, kind: str) -> None:
    assert platform_kind(name) == kind


def test_host_options_are_accepted_by_a_real_socket() -> None:
    """The computed options for this host apply to a real socket and read back."""
    from requests_azguard._keepalive import HOST_CONSTANTS, HOST_KIND

    with socket.socket() as sock:
        for level, opt, value in socket_options(CFG, HOST_CONSTANTS, HOST_KIND):
            sock.setsockopt(level, opt, value)
            assert sock.getsockopt(level, opt) == value
