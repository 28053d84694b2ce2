"""Validation of everything a person types: config files and ``--set`` values (issue 10, part 4).

Each rule of :mod:`prunefl.experiments.config` has a row here; every refusal is a ConfigError naming the key and
the value, and the CLI exits 2 before it writes anything.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import tracemalloc
from pathlib import Path

import pytest

from prunefl.cli import main
from prunefl.errors import ConfigError
from prunefl.experiments.config import (
    MAX_CONFIG_BYTES,
    MAX_TOML_NESTING,
    FLConfig,
    RunConfig,
    TimingConfig,
    config_from_dict,
    config_from_toml,
    dump_toml,
    load_config,
)
from prunefl.experiments.presets import preset_file, preset_names


@pytest.mark.parametrize(
    "override, fragment",
    [
        # not finite: TOML's nan/inf, from --set
        ("fl.lr=inf", "fl.lr must be a finite number, got inf"),
        ("lr=nan", "fl.lr must be a finite number, got nan"),
        ("lr=-inf", "fl.lr must be a finite number, got -inf"),
        ("timing.latency_s=inf", "timing.latency_s must be a finite number, got inf"),
        ("uplink_bytes_per_s=inf", "timing.uplink_bytes_per_s must be a finite number, got inf"),
        ("target_accuracies=[0.8, nan]", "fl.target_accuracies must be a finite number, got nan"),  # in a list
        ("compute_scales=[inf]", "timing.compute_scales must be a finite number, got inf"),
        ("reference.density=nan", "reference.density must be a finite number, got nan"),  # a section of ours
        ("pruning.ip_server_speedup=inf", "pruning.ip_server_speedup must be a finite number, got inf"),  # a method's
        ("feddst.alpha=nan", "feddst.alpha must be a finite number, got nan"),  # a method file's settings
        # absurdly large
        ("fl.lr=1e4", "fl.lr must be a finite number in (0, 1000], got 10000.0"),  # overflows weights
        ("fl.lr=1e308", "fl.lr must be a finite number in (0, 1000], got 1e+308"),
        ("pruning.ip_lr=2000", "pruning.ip_lr must be <= 1000 (0 = fl.lr), got 2000.0"),
        ("fl.batch_size=65537", "fl.batch_size must be in [1, 65536], got 65537"),
        ("fl.local_steps=100001", "fl.local_steps must be in [1, 100000], got 100001"),
        ("fl.rounds=1000001", "fl.rounds must be in [1, 10^6], got 1000001"),
        ("threads=1025", "threads must be in [0, 1024] (0 = PyTorch default), got 1025"),
        ("seed=4294967296", "seed must be in [0, 4294967295] (2^32 - 1), got 4294967296"),  # 2^32: no uint32
        ("seed=-1", "seed must be in [0, 4294967295] (2^32 - 1), got -1"),  # SeedSequence refuses < 0
        ("data.num_clients=100001", "data.num_clients must be in [1, 100000], got 100001"),
        ("data.image_size=1025", "data.image_size must be in [8, 1024], got 1025"),
        ("data.dirichlet_alpha=1e7", "data.dirichlet_alpha must be in (0, 1e6], got 10000000.0"),
        ("data.shards_per_client=10001", "data.shards_per_client must be in [1, 10000], got 10001"),
        ("data.eval_subset=1000000001", "data.eval_subset must be in [0, 10^9] (0 = full test set), got 1000000001"),
        ("timing.latency_s=86401", "timing.latency_s must be in [0, 86400] (a day), got 86401.0"),
        ("timing.uplink_bytes_per_s=0.5", "timing.uplink_bytes_per_s must be in [1, 1e15], got 0.5"),  # 1 B/s min
        ("timing.downlink_bytes_per_s=1e16", "timing.downlink_bytes_per_s must be in [1, 1e15], got 1e+16"),
        ("timing.compute_scale_sigma=11", "timing.compute_scale_sigma must be in [0, 10], got 11.0"),  # exp overflow
        ("timing.bandwidth_scales=[1e-7, 1, 1, 1, 1, 1, 1, 1, 1, 1]", "entries must be in [1e-6, 1e6]"),
        ("synflow.iterations=9223372036854775808", "synflow.iterations must fit in a 64-bit integer"),  # 2^63
        ("fl.lr=" + "9" * 400, "fl.lr must be a finite number of at most 64-bit size"),  # float() would overflow
        ("rounds=" + "9" * 5000, "fl.rounds must be an integer, got '999"),  # > 4300 digits: kept as text
        # probabilities and fractions
        ("reference.density=1.5", "reference.density must be in (0, 1], or 0 to take the run's, got 1.5"),
        ("fl.momentum=1", "fl.momentum must be in [0, 1), got 1.0"),
        # unsafe strings: run names that escape runs/, NUL and other control characters, lone surrogates
        ("name=../evil", "name must be one file-name component of 1 to 128 bytes"),
        ("name=a/b", "got 'a/b'"),
        ("name=a\\b", "got 'a\\\\b'"),  # a Windows separator
        ("name=..", "got '..'"),
        ("name=.", "got '.'"),
        ('name=""', "got ''"),  # empty
        ("name=" + "é" * 65, "name must be one file-name component of 1 to 128 bytes"),  # 130 bytes in UTF-8
        ('name="a\\u0000b"', "name must not contain control characters (NUL, newline, ...), found '\\x00'"),
        ('data.data_dir="/tmp/x\\u0000y"', "data.data_dir must not contain control characters"),
        ('timing.profile="p\\nq"', "timing.profile must not contain control characters (NUL, newline, ...), found '\\n'"),
        ("name=\udcff", "name must be valid Unicode text, got a lone surrogate"),  # from a non-UTF-8 argv
        ("reference.run_dir=" + "x" * 4097, "reference.run_dir must be at most 4096 characters, got 4097"),
        # --set values bounded like a file
        ("lr=" + "[" * 33 + "]" * 33, "--set lr nests 33 levels deep"),
        ("seed=1\nname=x", "seed must be an integer, got '1\\nname=x'"),  # one value per --set, not a document
    ],
)
def test_bad_set_value_is_config_error_naming_key_and_value(override: str, fragment: str) -> None:
    # Execute
    with pytest.raises(ConfigError) as info:
        load_config(None, [override])
    # Assert
    assert fragment in str(info.value)
    assert len(str(info.value)) < 1000  # a 4 kB value is quoted short


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("[fl]\nlr = nan\n", "fl.lr must be a finite number, got nan"),
        ("[fl]\nlr = +inf\n", "fl.lr must be a finite number, got inf"),
        ("[timing]\nlatency_s = inf\n", "timing.latency_s must be a finite number, got inf"),
        ("[fl]\nbatch_size = 9223372036854775807\n", "fl.batch_size must be in [1, 65536]"),  # int64 max
        ('name = "runs/../../etc"\n', "name must be one file-name component"),
        ('name = "/abs"\n', "got '/abs'"),  # absolute where a name is expected
        ('[data]\ndata_dir = "a\\u0000"\n', "data.data_dir must not contain control characters"),
        ("seed = 1" + "0" * 5000 + "\n", "is not valid TOML: Exceeds the limit"),  # tomllib's ValueError, wrapped
        ("x = " + "[" * 33 + "]" * 33 + "\n", f"nests 33 levels deep (tables, arrays or dotted-key parts); at most "
                                              f"{MAX_TOML_NESTING}"),  # arrays: tomllib recurses per level
        ("x = " + "{a = " * 40 + "1" + "}" * 40 + "\n", "nests 40 levels deep"),  # inline tables
        ("a" + ".a" * 40 + " = 1\n", "nests 41 levels deep"),  # dotted key: O(n²) memory in tomllib
        ("[a" + ".a" * 40 + "]\n", "nests 41 levels deep"),  # dotted table header
        ('["a"' + '."a"' * 40 + "]\n", "nests 41 levels deep"),  # quoted key parts count too
        ("x = [\"\"\"a\"\"\"\", " + "{a" + ".a" * 40 + " = 1}]\n", "nests 41 levels deep"),  # """a"""" ends at 4th "
        ("x = " + "[" * 100_000 + "\n", "nests 100000 levels deep"),  # never reaches the recursive parser
        ("x = " + "]" * 50 + "[" * 33 + "\n", "nests 33 levels deep"),  # surplus closers do not hide openers
    ],
)
def test_bad_file_is_config_error_before_parsing(tmp_path: Path, text: str, fragment: str) -> None:
    # Prepare
    path = tmp_path / "c.toml"
    path.write_text(text, encoding="utf-8")
    # Execute
    with pytest.raises(ConfigError) as info:
        load_config(path)
    # Assert
    assert fragment in str(info.value)


@pytest.mark.parametrize(
    "text",
    [
        'name = "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["\n',  # brackets in a string do not nest
        "name = '{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{'\n",  # nor in a literal string
        "# [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\nseed = 3\n",  # nor in a comment
        'name = "a.b.c.d.e.f.g.h.i.j.k.l.m.n.o.p.q.r.s.t.u.v.w.x.y.z.a.b.c.d.e.f.g"\n',  # dots in a string
        'name = """\n[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\\"""\n"""\n',  # escaped quotes in a """ string
    ],
)
def test_nesting_check_ignores_strings_and_comments(tmp_path: Path, text: str) -> None:
    # Prepare
    path = tmp_path / "c.toml"
    path.write_text(text, encoding="utf-8")
    # Execute / Assert: the nesting check passes; the name rule may still refuse what the string holds
    try:
        load_config(path)
    except ConfigError as exc:
        assert "nests" not in str(exc)


def test_config_file_over_one_mib_is_refused_unread(tmp_path: Path) -> None:
    # Prepare: a valid TOML comment one byte over the cap
    path = tmp_path / "big.toml"
    path.write_bytes(b"#" + b"x" * MAX_CONFIG_BYTES + b"\n")
    # Execute / Assert
    with pytest.raises(ConfigError, match=f"is larger than {MAX_CONFIG_BYTES} bytes"):
        load_config(path)


_K = 64 << 10  # 64 KiB: the bound is linear in the size, so a 64 KiB text shows it for 1 MiB too


@pytest.mark.parametrize(
    "text",
    [
        "x = [" + "{}," * (_K // 3 - 4) + "]\n",  # empty inline tables: tomllib's costliest objects per byte
        "[fl]\ntarget_accuracies = [" + "1," * (_K // 2 - 16) + "]\n",  # the most list entries per byte
        'name = "' + '\\"' * (_K // 2 - 8) + '"\n',  # escapes: a backtracking regex would keep ~100 B each
        'name = """' + '""x' * (_K // 3 - 8) + '"""\n',  # lone quotes in a multi-line string, likewise
        "x = " + "[" * (_K - 8) + "\n",  # brackets: the nesting scan's arrays
        "".join(f"k{i} = 1\n" for i in range(_K // 10)),  # many keys
    ],
)
def test_loading_a_hostile_file_allocates_at_most_32_bytes_per_byte_plus_4_mib(tmp_path: Path, text: str) -> None:
    # Prepare
    path = tmp_path / "c.toml"
    path.write_text(text, encoding="utf-8")
    size = path.stat().st_size
    # Execute
    tracemalloc.start()
    try:
        load_config(path)
    except ConfigError:
        pass
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # Assert: the bound test_config_fuzz.py checks on every 8th random input
    assert peak <= (4 << 20) + 32 * size, (peak, size)


def test_config_file_that_is_not_utf8_or_unreadable_is_config_error(tmp_path: Path) -> None:
    # Prepare
    latin = tmp_path / "latin.toml"
    latin.write_bytes('name = "caf\xe9"\n'.encode("latin-1"))
    unreadable = tmp_path / "secret.toml"
    unreadable.write_text("seed = 1\n")
    unreadable.chmod(0)
    # Execute / Assert
    with pytest.raises(ConfigError, match="not UTF-8 text"):
        load_config(latin)
    if os.geteuid() != 0:  # root reads anything
        with pytest.raises(ConfigError, match="cannot be read"):
            load_config(unreadable)


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("a" + ".a" * 100_000 + " = 1", "run message nests 100001 levels deep"),  # would cost tomllib O(n²) memory
        ("x = " + "{a = " * 2000, "run message nests 2000 levels deep"),
        ("#" * (MAX_CONFIG_BYTES + 1), f"run message is larger than {MAX_CONFIG_BYTES} bytes"),
        ("[fl\n", "run message is not valid TOML"),
        ("[fl]\nlr = inf", "fl.lr must be a finite number, got inf"),
    ],
)
def test_config_from_toml_text_gets_the_file_checks(text: str, fragment: str) -> None:
    # Execute
    with pytest.raises(ConfigError) as info:
        config_from_toml(text, "run message")
    # Assert
    assert fragment in str(info.value)


def test_python_api_gets_the_same_rules_as_files() -> None:
    # Prepare / Execute / Assert: dataclasses built directly are checked by the same rules
    with pytest.raises(ConfigError, match="fl.lr must be a finite number in"):
        FLConfig(lr=float("inf"))
    with pytest.raises(ConfigError, match="timing.latency_s must be in"):
        TimingConfig(latency_s=float("nan"))
    with pytest.raises(ConfigError, match="seed must be in"):
        RunConfig(seed=2**40)
    with pytest.raises(ConfigError, match="name must be one file-name component"):
        RunConfig(name="../x")
    with pytest.raises(ConfigError, match="timing.preset must not contain control characters"):
        RunConfig(timing=TimingConfig(preset="a\x00"))


def test_bounds_are_inclusive_at_their_documented_ends() -> None:
    # Execute
    cfg = load_config(None, ["lr=1000", "batch_size=65536", "local_steps=100000", "rounds=1000000",
                             "threads=1024", "seed=4294967295", "latency_s=86400", "name=" + "a" * 128,
                             "uplink_bytes_per_s=1", "compute_scale_sigma=10"])  # fmt: skip
    # Assert
    assert (cfg.fl.lr, cfg.fl.batch_size, cfg.seed, cfg.threads) == (1000.0, 65536, 2**32 - 1, 1024)


def test_strings_with_tabs_quotes_and_unicode_round_trip_through_dump_toml() -> None:
    # Prepare: the characters a valid string may hold that TOML must escape or carry as they are
    data = dataclasses.replace(RunConfig().data, data_dir="C:\\d\\é 😀")
    cfg = RunConfig(name="ü 名前\t\"q\" 'x' #[", data=data)
    # Execute
    back = config_from_dict(tomllib.loads(dump_toml(cfg)))
    # Assert
    assert back == cfg


@pytest.mark.parametrize("name", preset_names())
def test_shipped_presets_still_load(name: str) -> None:
    # Execute
    cfg = load_config(name)
    # Assert: and they round-trip
    assert config_from_dict(tomllib.loads(dump_toml(cfg))) == cfg
    assert len(preset_file(name).read_bytes()) < MAX_CONFIG_BYTES


@pytest.mark.parametrize(
    "extra, fragment",
    [
        (["--set", "fl.lr=inf"], "fl.lr must be a finite number, got inf"),
        (["--set", "name=../../escape"], "name must be one file-name component"),
        (["--set", "seed=-3"], "seed must be in [0, 4294967295]"),
        (["--set", "threads=100000"], "threads must be in [0, 1024]"),
    ],
)
def test_cli_exits_2_naming_key_before_writing_anything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], extra: list[str],
    fragment: str,
) -> None:
    # Prepare: run from an empty folder, so a default runs/ folder would show up here too
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "c.toml"
    config.write_text('[data]\ndataset = "digits"\n[model]\nname = "mlp"\n')
    # Execute
    code = main(["run", "--config", str(config), *extra, "--out", str(tmp_path / "out"), "--no-progress"])
    # Assert
    assert code == 2
    assert fragment in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.toml"]  # neither out/ nor runs/


def test_cli_exits_2_on_a_hostile_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Prepare
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "c.toml"
    config.write_text("x = " + "[" * 5000 + "\n")
    # Execute
    code = main(["run", "--config", str(config), "--no-progress"])
    compare_code = main(["compare", "--config", str(config), "--methods", "fedavg", "--no-progress"])
    # Assert
    assert (code, compare_code) == (2, 2)
    assert "nests 5000 levels deep" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.toml"]


def test_cli_compare_refuses_seed_out_of_range_before_writing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Prepare
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "c.toml"
    config.write_text('[data]\ndataset = "digits"\n[model]\nname = "mlp"\n')
    # Execute
    code = main(["compare", "--config", str(config), "--methods", "fedavg", "--seeds", "0,4294967296",
                 "--out", str(tmp_path / "out"), "--no-progress"])  # fmt: skip
    # Assert
    assert code == 2
    assert "seed must be in [0, 4294967295]" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.toml"]
