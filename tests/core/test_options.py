"""Mount options (openai_fs/commands/options.py): sizes, ``-o`` lists as mount(8) and fstab pass them,
flags over ``-o``, and range checks."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from openai_fs.commands import options
from openai_fs.commands.options import MountOptions, OptionError, parse_size

KiB, MiB, GiB = 1024, 1024 ** 2, 1024 ** 3


def parse(*argv: str) -> MountOptions:
    parser = argparse.ArgumentParser(exit_on_error=False)
    options.add_mount_arguments(parser)
    return options.from_arguments(parser.parse_args(["/mnt/point", *argv]))


@pytest.mark.parametrize(("text", "size"), [
    ("0", 0), ("512", 512), ("64K", 64 * KiB), ("64k", 64 * KiB), ("1M", MiB),
    ("256MiB", 256 * MiB), ("2MB", 2 * MiB), ("1G", GiB), ("1.5G", int(1.5 * GiB)),
    ("0.5K", 512), (" 3 M ", 3 * MiB), ("100b", 100), ("2T", 2 * 1024 * GiB),
])
def test_parse_size(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "K", "abc", "-1K", "1X", "1.5.2G", "1e3", "12 34",
                                  "1KK", "M1"])
def test_parse_size_refuses_what_is_not_a_size(text):
    with pytest.raises(OptionError, match="size"):
        parse_size(text)


def test_defaults():
    chosen = parse()
    assert chosen.mountpoint == Path("/mnt/point")
    assert (chosen.read_only, chosen.allow_other, chosen.foreground) == (False, False, False)
    assert chosen.cache_size == 256 * MiB and chosen.disk_cache_size == 4 * GiB
    assert chosen.dir_ttl == 30.0 and chosen.part_size == 16 * MiB
    assert chosen.expires_after is None
    assert chosen.read_ahead == MiB


def test_o_options_as_mount_passes_them():
    chosen = parse("-o", "ro,allow_other,cache_size=1G,dir-ttl=2.5",
                   "-o", "disk-cache-size=512M,uid=1001,gid=1002,multipart_threshold=8M")
    assert chosen.read_only and chosen.allow_other
    assert chosen.cache_size == GiB and chosen.dir_ttl == 2.5
    assert chosen.disk_cache_size == 512 * MiB and chosen.multipart_threshold == 8 * MiB
    assert (chosen.uid, chosen.gid) == (1001, 1002)


def test_dashes_and_underscores_are_the_same_option():
    assert parse("-o", "cache-size=2M").cache_size == parse("-o", "cache_size=2M").cache_size \
        == 2 * MiB
    assert parse("-o", "read-only").read_only and parse("-o", "read_only").read_only


def test_mount8_options_that_mean_nothing_here_are_ignored():
    chosen = parse("-o", "rw,noatime,nodev,nosuid,_netdev,defaults,nofail,user,noauto")
    assert chosen == parse()


@pytest.mark.parametrize("item", ["bogus", "cache_sizes=1G", "max_read=4096"])
def test_an_unknown_o_option_is_an_error(item):
    with pytest.raises(OptionError, match="unknown"):
        parse("-o", item)


def test_bad_o_values_are_errors():
    with pytest.raises(OptionError):
        parse("-o", "cache_size=lots")
    with pytest.raises(OptionError, match="needs a value"):
        parse("-o", "cache_size")
    with pytest.raises(OptionError):
        parse("-o", "uid=root")
    with pytest.raises(OptionError):
        parse("-o", "dir_ttl=-1")
    with pytest.raises(OptionError):
        parse("-o", "upload_concurrency=0")


def test_a_switch_given_a_false_value_stays_off():
    assert not parse("-o", "allow_other=0").allow_other
    assert parse("-o", "allow_other=yes").allow_other


def test_flags_win_over_o():
    chosen = parse("-o", "cache_size=1G,dir_ttl=5,part_size=8M", "--cache-size", "2G",
                   "--dir-ttl", "7")
    assert chosen.cache_size == 2 * GiB and chosen.dir_ttl == 7.0
    assert chosen.part_size == 8 * MiB                 # no flag: -o holds
    chosen = parse("--cache-size", "3M", "-o", "cache_size=1G")     # whatever the order
    assert chosen.cache_size == 3 * MiB


def test_a_bad_flag_value_is_an_argparse_error():
    with pytest.raises(argparse.ArgumentError, match="size"):
        parse("--cache-size", "big")


@pytest.mark.parametrize(("value", "ok"), [
    ("1", True), ("64M", True), ("16M", True), ("0", False), ("65M", False),
    (str(64 * MiB + 1), False),
])
def test_part_size_must_be_between_one_byte_and_64m(value, ok):
    if ok:
        assert parse("--part-size", value).part_size == parse_size(value)
    else:
        with pytest.raises(OptionError, match="part-size"):
            parse("--part-size", value)
        with pytest.raises(OptionError, match="part-size"):
            parse("-o", f"part_size={value}")


@pytest.mark.parametrize(("value", "ok"), [
    ("3600", True), ("2592000", True), ("86400", True), ("3599", False), ("2592001", False),
    ("0", False), ("-3600", False),
])
def test_expires_after_must_be_between_an_hour_and_thirty_days(value, ok):
    if ok:
        assert parse(f"--expires-after={value}").expires_after == int(value)
    else:
        with pytest.raises(OptionError, match="expires-after"):
            parse(f"--expires-after={value}")


@pytest.mark.parametrize(("value", "ok"), [
    ("0", True), ("128K", True), ("1M", True), ("64M", True), ("65M", False),
])
def test_read_ahead_is_at_most_64m(value, ok):
    if ok:
        assert parse("-o", f"read_ahead={value}").read_ahead == parse_size(value)
    else:
        with pytest.raises(OptionError, match="read-ahead"):
            parse("--read-ahead", value)


def test_local_only_patterns_add_up_from_flags_and_o_lists():
    chosen = parse("--local-only", "*.bak", "-o", "local_only=scratch-*,local_only=*.old",
                   "--local-only", "draft-*")
    assert chosen.local_only == ("scratch-*", "*.old", "*.bak", "draft-*")
    assert parse().local_only == () and not parse().no_local_only
    assert parse("--no-local-only").no_local_only and parse("-o", "no_local_only").no_local_only


def test_the_write_back_switch():
    assert parse("--write-back").write_back and parse("-o", "write_back").write_back
    assert not parse().write_back
