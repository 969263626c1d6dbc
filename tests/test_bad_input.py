"""Bad input, command by command: one line on stderr naming what is wrong, exit code 2, no
traceback, and nothing already on disk changed.

Every case runs ``cli.main`` in this process against one prepared folder (inputs, pre-existing
outputs, a results folder with latency tables and runs) and compares a snapshot of the whole
folder before and after: a changed byte, a temp file, a lock file or a new folder fails the case.
Each must fail while checking its input, before any training, Ray start or table build; a case
that got that far would take seconds to minutes instead of milliseconds.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from tests.cli_helpers import assert_one_line_error, run_cli, run_main

# ---- the prepared folder -----------------------------------------------------------------------

GOOD_SPEC_RES = 32


def _seed_spec():
    from space.searchspace import get_space

    sp = get_space("mnasnet")
    return sp.decode(sp.sample(0), resolution=GOOD_SPEC_RES, num_classes=10)


def _environment() -> dict:
    """What a measurement on this machine records (1 thread, CPU provider), as latency/runner.py writes it."""
    from latency.runner import environment

    return environment(1, "cpu", "auto")


def _write_table(results: Path, folder: str, **meta) -> None:
    """A real latency table (the units of one network, made-up times) with this machine's metadata,
    filed under ``results/latency/<folder>/``; ``meta`` overrides fields (another device, version)."""
    from latency.signature import spec_sigs
    from latency.table import LatencyTable

    rows = [{**s._asdict(), "latency_ms": 0.045 * (i + 1), "median_ms": 0.05 * (i + 1), "p10_ms": 0.04 * (i + 1),
             "p90_ms": 0.06 * (i + 1), "spread": 0.1, "session_spread": 0.02, "runs": 5}
            for i, s in enumerate(spec_sigs(_seed_spec()))]
    t = LatencyTable(meta={"device": folder, **_environment(), "builds": [
        {"space": "mnasnet", "resolution": GOOD_SPEC_RES, "mode": "quick"}], **meta})
    t.add(rows)
    t.save(results / "latency" / folder / "units.csv")


def _spec_variant(path: Path, **changes) -> None:
    """The seed spec's JSON with fields replaced (``layer0`` changes the first layer)."""
    d = _seed_spec().to_dict()
    d["layers"][0].update(changes.pop("layer0", {}))
    d.update(changes)
    path.write_text(json.dumps(d))


def _measurements(path: Path, env: dict, rows: list[str]) -> None:
    """A measurements CSV in the format latency/runner.py writes: a JSON header line, then rows."""
    path.write_text("\n".join([f"# hwnas-latency-runner {json.dumps(env)}",
                               "file,latency_ms,median_ms,p10_ms,p90_ms,spread,session_spread,runs", *rows]) + "\n")


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    import torch

    from latency.signature import spec_sigs
    from space.builder import build_model

    w = tmp_path_factory.mktemp("bad_input")
    inp, out, res = w / "in", w / "out", w / "results"
    for d in (inp, out, res):
        d.mkdir()
    spec = _seed_spec()
    spec.save(inp / "seed.json")

    # ArchSpec files, malformed in every way the parser must name
    (inp / "bad.json").write_text('{"stem": {"out_ch": 16},')
    (inp / "empty.json").write_text("")
    (inp / "list.json").write_text("[]")
    (inp / "binary.json").write_bytes(b"\xff\xfe\x00\x81 not text")
    (inp / "folder.json").mkdir()
    (inp / "a_file").write_text("a plain file where a folder is expected\n")
    _spec_variant(inp / "str_kernel.json", layer0={"kernel": "3"})
    _spec_variant(inp / "unknown_act.json", layer0={"act": "swish"})
    _spec_variant(inp / "unknown_field.json", width_mult=1.0)
    _spec_variant(inp / "zero_res.json", resolution=0)
    _spec_variant(inp / "neg_classes.json", num_classes=-10)
    (inp / "layers_obj.json").write_text(json.dumps({**spec.to_dict(), "layers": {"0": spec.to_dict()["layers"][0]}}))
    (inp / "nan_res.json").write_text(json.dumps(spec.to_dict()).replace('"resolution": 32', '"resolution": NaN'))
    (inp / "inf_dropout.json").write_text(json.dumps(spec.to_dict()).replace('"dropout": 0.2', '"dropout": Infinity'))

    # weights and ONNX files that are not what they claim
    (inp / "junk.pt").write_bytes(b"PK\x03\x04 not a checkpoint")
    (inp / "junk.onnx").write_bytes(b"\x08\x07 not an onnx model")
    (inp / "folder.onnx").mkdir()

    # a latency export (manifest) and measurements CSVs made from it
    sigs = spec_sigs(spec)
    items = [{"kind": "unit", "file": f"units/u{i:05d}.onnx", "sig": list(s)} for i, s in enumerate(sigs)]
    exp = inp / "export"
    exp.mkdir()
    (exp / "manifest.json").write_text(json.dumps({"format": 1, "id": "0123456789abcdef", "items": items}))
    env = {**_environment(), "manifest_id": "0123456789abcdef"}
    files = [it["file"] for it in items]
    _measurements(exp / "ok.csv", env, [f"{f},0.09,0.1,0.09,0.12,0.1,0.02,5" for f in files])
    _measurements(exp / "nan.csv", env, [f"{f},nan,0.1,0.09,0.12,0.1,0.02,5" for f in files])
    _measurements(exp / "negative.csv", env, [f"{f},-0.1,0.1,0.09,0.12,0.1,0.02,5" for f in files])
    _measurements(exp / "inf.csv", env, [f"{f},0.09,0.1,0.09,inf,0.1,0.02,5" for f in files])
    _measurements(exp / "zero_runs.csv", env, [f"{f},0.09,0.1,0.09,0.12,0.1,0.02,0" for f in files])
    _measurements(exp / "string.csv", env, [f"{f},fast,0.1,0.09,0.12,0.1,0.02,5" for f in files])
    _measurements(exp / "other_export.csv", {**env, "manifest_id": "ffffffffffffffff"},
                  [f"{files[0]},0.09,0.1,0.09,0.12,0.1,0.02,5"])
    _measurements(exp / "other_ort.csv", {**env, "ort_version": "1.0.0"},
                  [f"{f},0.09,0.1,0.09,0.12,0.1,0.02,5" for f in files])
    (exp / "old_runner.csv").write_text(f"# hwnas-latency-runner {json.dumps(env)}\nfile,median_ms,p10_ms,p90_ms,spread,runs\n"
                                        + "".join(f"{f},0.1,0.09,0.12,0.1,5\n" for f in files))
    (exp / "bad_header.csv").write_text("# hwnas-latency-runner {oops\nfile,latency_ms\n")
    (exp / "list_header.csv").write_text('# hwnas-latency-runner [1, 2]\nfile,latency_ms,median_ms,p10_ms,p90_ms,spread,'
                                         'session_spread,runs\n')
    for name, manifest in (("man_bad", "{not json"), ("man_ints", json.dumps({"id": "0123456789abcdef", "items": [1, 2]})),
                           ("man_nokind", json.dumps({"id": "0123456789abcdef", "items": [{"file": files[0]}]})),
                           ("man_shortsig", json.dumps({"id": "0123456789abcdef",
                                                        "items": [{**items[0], "sig": items[0]["sig"][:3]}]}))):
        (inp / name).mkdir()
        (inp / name / "manifest.json").write_text(manifest)

    # search run folders whose trials or results are malformed
    (inp / "run_badarch").mkdir()
    (inp / "run_badarch" / "trials.csv").write_text("trial_id,status,arch,weights\nt1,ok,{bad json,\n")
    (inp / "run_binary").mkdir()
    (inp / "run_binary" / "trials.csv").write_bytes(b"\xff\xfe\x00\x01 not a table")
    (inp / "run_badna").mkdir()
    (inp / "run_badna" / "netadapt.json").write_text('{"stem": 5, "layers": []}')

    # outputs written earlier, which a failing command must leave as they are
    (out / "model.onnx").write_bytes(b"an earlier export")
    (out / "samples").mkdir()
    (out / "samples" / "sample_0000.json").write_text('{"earlier": "sample"}\n')
    (out / "lat_export").mkdir()
    (out / "lat_export" / "manifest.json").write_text('{"earlier": "export"}\n')

    # the results folder: a seed from an earlier search, latency tables, search and NetAdapt runs
    spec.save(res / "seed.json")
    torch.save(build_model(spec).state_dict(), res / "seed.pt")
    _write_table(res, "good")
    _write_table(res, "oldort", ort_version="1.0.0")
    _write_table(res, "foreign", device="phone")  # a phone's table copied into another device's folder
    _write_table(res, "corrupt")
    with (res / "latency" / "corrupt" / "units.csv").open("a") as f:
        f.write("mbconv,3,1,16,16\n")  # an appended, half-written row
    _write_table(res, "badmeta")
    (res / "latency" / "badmeta" / "units.json").write_text('{"device": "badmeta", ')
    for name, options in (("taken", json.dumps({"target_ms": 15.0})), ("broken", '{"target_ms": 15.0,')):
        (res / "runs" / name / "tune").mkdir(parents=True)
        (res / "runs" / name / "options.json").write_text(options)
    (res / "netadapt" / "taken").mkdir(parents=True)
    (res / "netadapt" / "taken" / "history.csv").write_text("iteration,latency_ms\n0,1.0\n")
    (res / "netadapt" / "broken").mkdir(parents=True)
    (res / "netadapt" / "broken" / "state.json").write_text('{"iteration": 1}')
    (res / "netadapt" / "broken" / "config.json").write_text('{"command": "netadapt"}')
    (res / "netadapt" / "broken" / "invocation.json").write_text('{"seed": ')

    # a second results folder whose local-cpu table was measured with another onnxruntime
    stale = w / "results_stale"
    _write_table(stale, "local-cpu", ort_version="1.0.0")
    spec.save(stale / "seed.json")
    return w


def _snapshot(root: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


# ---- the cases -----------------------------------------------------------------------------------

def case(id: str, cmd: str, *needles: str, stale_local: bool = False):
    """``cmd`` is split on spaces; ``{in}`` and ``{out}`` are the prepared input and output folders.
    ``stale_local``: run against the results folder whose local-cpu table is of another onnxruntime."""
    return pytest.param(cmd, needles, stale_local, id=id)


SEED = "--seed {in}/seed.json"
CASES = [
    # -- space show: malformed ArchSpec JSON, wrong types, unknown names, impossible numbers
    case("show-empty-file", "space show {in}/empty.json", "empty.json", "not valid JSON"),
    case("show-cut-off-json", "space show {in}/bad.json", "bad.json", "not valid JSON", "line 1"),
    case("show-list-not-object", "space show {in}/list.json", "is not a JSON object"),
    case("show-binary-file", "space show {in}/binary.json", "not a text file"),
    case("show-folder-as-spec", "space show {in}/folder.json", "folder.json", "is a folder"),
    case("show-string-kernel", "space show {in}/str_kernel.json", "layers[0].kernel", "is not an integer"),
    case("show-layers-object", "space show {in}/layers_obj.json", "layers", "is not a list"),
    case("show-unknown-activation", "space show {in}/unknown_act.json", "layers[0].act", "swish", "hswish"),
    case("show-unknown-field", "space show {in}/unknown_field.json", "width_mult", "unknown field"),
    case("show-nan-resolution", "space show {in}/nan_res.json", "resolution", "NaN"),
    case("show-inf-dropout", "space show {in}/inf_dropout.json", "dropout", "[0, 1)"),
    case("show-zero-resolution-in-spec", "space show {in}/zero_res.json", "resolution", "must be >= 1"),
    case("show-negative-classes-in-spec", "space show {in}/neg_classes.json", "num_classes", "must be >= 1"),
    case("show-resolution-zero", "space show mobilenet_v2 --resolution 0", "--resolution", "must be >= 1"),
    case("show-classes-negative", "space show mobilenet_v2 --classes -3", "--classes", "must be >= 1"),
    case("show-resolution-nan", "space show mobilenet_v2 --resolution nan", "--resolution", "not an integer"),
    case("show-missing-argument", "space show", "NAME_OR_JSON", "--help"),
    # -- space sample / list
    case("sample-n-negative", "space sample --n -2 --out {out}/samples", "--n", "must be >= 1"),
    case("sample-n-string", "space sample --n ten --out {out}/samples", "--n", "not an integer"),
    case("sample-resolution-zero", "space sample --resolution 0 --out {out}/samples", "--resolution"),
    case("sample-classes-zero", "space sample --classes 0 --out {out}/samples", "--classes"),
    case("sample-seed-float", "space sample --seed 1.5 --out {out}/samples", "--seed", "1.5"),
    case("sample-unknown-space-keeps-samples", "space sample --space nas --out {out}/samples", "unknown search space",
         "mnasnet"),
    case("sample-out-under-a-file", "space sample --out {in}/a_file/sub", "a_file", "is a file, not a folder"),
    case("list-unknown-option", "space list --verbose", "unrecognized arguments", "--verbose"),
    # -- export
    case("export-cut-off-spec", "export {in}/bad.json --onnx {out}/model.onnx", "not valid JSON"),
    case("export-missing-spec", "export {in}/none.json --onnx {out}/model.onnx", "none.json", "no such file"),
    case("export-wrong-type-spec", "export {in}/str_kernel.json --onnx {out}/model.onnx", "is not an integer"),
    case("export-folder-as-spec", "export {in}/folder.json --onnx {out}/model.onnx", "is a folder"),
    case("export-onnx-under-a-file", "export mobilenet_v3_small --onnx {in}/a_file/m.onnx", "is a file, not a folder"),
    case("export-resolution-negative", "export mobilenet_v3_small --resolution -32 --onnx {out}/model.onnx",
         "--resolution", "must be >= 1"),
    case("export-weights-missing", "export {in}/seed.json --weights {in}/none.pt --onnx {out}/model.onnx",
         "none.pt", "no such weights file"),
    case("export-weights-folder", "export {in}/seed.json --weights {in}/folder.json --onnx {out}/model.onnx",
         "is a folder, not a weights file"),
    case("export-trial-bad-arch", "export {in}/run_badarch --trial t1 --onnx {out}/model.onnx", "trial t1",
         "not valid JSON"),
    case("export-trial-binary-table", "export {in}/run_binary --trial t1 --onnx {out}/model.onnx", "trials.csv",
         "not a readable trials table"),
    case("export-run-bad-netadapt-json", "export {in}/run_badna --onnx {out}/model.onnx", "netadapt.json", "stem"),
    case("export-missing-onnx-option", "export mobilenet_v3_small", "--onnx", "required"),
    # -- latency measure
    case("measure-runs-zero", "latency measure mobilenet_v2 --runs 0", "--runs", "must be >= 1"),
    case("measure-threads-zero", "latency measure mobilenet_v2 --threads 0", "--threads", "must be >= 1"),
    case("measure-threads-string", "latency measure mobilenet_v2 --threads many", "--threads", "not an integer"),
    case("measure-warmup-negative", "latency measure mobilenet_v2 --warmup -1", "--warmup", "must be >= 0"),
    case("measure-clock-unknown", "latency measure mobilenet_v2 --clock sundial", "--clock", "invalid choice"),
    case("measure-missing-onnx", "latency measure {in}/none.onnx", "none.onnx", "no such ONNX file"),
    case("measure-folder-onnx", "latency measure {in}/folder.onnx", "is a folder, not an ONNX file"),
    case("measure-junk-onnx", "latency measure {in}/junk.onnx --runs 1", "junk.onnx", "onnxruntime cannot load"),
    case("measure-onnx-with-resolution", "latency measure {in}/junk.onnx --resolution 32", "cannot change an ONNX file"),
    case("measure-bad-spec", "latency measure {in}/list.json", "is not a JSON object"),
    # -- latency predict
    case("predict-device-not-a-name", "latency predict {in}/seed.json --device ../good", "not usable as a folder name"),
    case("predict-unknown-space", "latency predict {in}/seed.json --device good --space nas", "unknown search space"),
    case("predict-table-of-another-device", "latency predict {in}/seed.json --device foreign", "'phone'", "not 'foreign'"),
    case("predict-local-table-of-another-onnxruntime", "latency predict {in}/seed.json", "onnxruntime 1.0.0",
         "rebuild", stale_local=True),
    case("predict-corrupted-table", "latency predict {in}/seed.json --device corrupt", "checksum mismatch"),
    case("predict-table-metadata-not-json", "latency predict {in}/seed.json --device badmeta", "units.json",
         "not valid JSON"),
    case("predict-resolution-zero", "latency predict {in}/seed.json --device good --resolution 0", "--resolution"),
    case("predict-wrong-type-spec", "latency predict {in}/layers_obj.json --device good", "is not a list"),
    # -- latency build (must refuse before measuring anything)
    case("build-networks-zero", "latency build --device good --networks 0", "--networks 0", "every family"),
    case("build-networks-string", "latency build --networks lots", "--networks", "lots"),
    case("build-threads-zero", "latency build --threads 0", "--threads", "must be >= 1"),
    case("build-resolution-negative", "latency build --resolution -224", "--resolution"),
    case("build-unknown-space", "latency build --device fresh --space nas", "unknown search space"),
    case("build-device-not-a-name", "latency build --device a/b", "not usable as a folder name"),
    case("build-unknown-provider", "latency build --device fresh --provider tpu", "'tpu'", "available"),
    case("build-unknown-mode", "latency build --mode fast", "--mode", "invalid choice"),
    case("build-onto-table-of-another-onnxruntime", f"latency build --device oldort --resolution {GOOD_SPEC_RES}",
         "ort_version='1.0.0'", "delete"),
    case("build-onto-table-of-other-threads", f"latency build --device good --threads 2 --resolution {GOOD_SPEC_RES}",
         "threads=1", "another --device"),
    case("build-onto-table-of-another-device", "latency build --device foreign", "device='phone'"),
    case("build-onto-corrupted-table", "latency build --device corrupt", "checksum mismatch"),
    case("build-local-table-of-another-onnxruntime", "latency build", "ort_version='1.0.0'", stale_local=True),
    # -- latency export
    case("lexport-out-is-a-file", "latency export --out {in}/a_file", "exists and is not a folder"),
    case("lexport-out-under-a-file", "latency export --out {in}/a_file/sub", "is a file, not a folder"),
    case("lexport-networks-negative", "latency export --networks -1 --out {out}/lat_export", "--networks -1", ">= 0"),
    case("lexport-unknown-space", "latency export --space nas --out {out}/lat_export", "unknown search space"),
    case("lexport-resolution-zero", "latency export --resolution 0 --out {out}/lat_export", "--resolution"),
    case("lexport-unknown-mode", "latency export --mode all --out {out}/lat_export", "--mode", "invalid choice"),
    # -- latency import
    case("import-missing-csv", "latency import {in}/export/none.csv --device phone", "no such measurements file"),
    case("import-folder-as-csv", "latency import {in}/folder.json --device phone", "cannot read the measurements file"),
    case("import-header-not-json", "latency import {in}/export/bad_header.csv --device phone", "malformed"),
    case("import-header-a-list", "latency import {in}/export/list_header.csv --device phone", "not a JSON object"),
    case("import-string-time", "latency import {in}/export/string.csv --device phone", "malformed", "fast"),
    case("import-nan-time", "latency import {in}/export/nan.csv --device phone", "impossible measurement",
         "latency_ms=nan"),
    case("import-negative-time", "latency import {in}/export/negative.csv --device phone", "latency_ms=-0.1"),
    case("import-inf-time", "latency import {in}/export/inf.csv --device phone", "p90_ms=inf"),
    case("import-csv-of-an-older-runner", "latency import {in}/export/old_runner.csv --device phone", "older runner.py",
         "export the folder again"),
    case("import-zero-runs", "latency import {in}/export/zero_runs.csv --device phone", "runs=0"),
    case("import-manifest-not-json", "latency import {in}/export/ok.csv --device phone --manifest {in}/man_bad",
         "manifest.json", "not valid JSON"),
    case("import-manifest-items-not-objects",
         "latency import {in}/export/ok.csv --device phone --manifest {in}/man_ints", "item 0 is malformed"),
    case("import-manifest-item-without-kind",
         "latency import {in}/export/ok.csv --device phone --manifest {in}/man_nokind", "item 0 is malformed"),
    case("import-manifest-short-signature",
         "latency import {in}/export/ok.csv --device phone --manifest {in}/man_shortsig", "item 0 is malformed"),
    case("import-manifest-missing", "latency import {in}/export/ok.csv --device phone --manifest {in}/folder.json",
         "no manifest"),
    case("import-manifest-is-a-file", "latency import {in}/export/ok.csv --device phone --manifest {in}/a_file",
         "is a file"),
    case("import-from-another-export", "latency import {in}/export/other_export.csv --device phone", "another export"),
    case("import-other-onnxruntime-into-table", "latency import {in}/export/other_ort.csv --device good",
         "ort_version='", "'1.0.0'"),
    case("import-into-table-of-another-device", "latency import {in}/export/ok.csv --device foreign", "device='phone'"),
    case("import-device-not-a-name", "latency import {in}/export/ok.csv --device ../phone", "not usable as a folder name"),
    case("import-device-missing", "latency import {in}/export/ok.csv", "--device", "required"),
    case("measure-negative-wait", "latency measure mobilenet_v3_small --wait -1", "--wait", "must be >= 0"),
    case("measure-fast-within-zero", "latency measure mobilenet_v3_small --fast-within 0", "--fast-within",
         "above 0%"),
    case("measure-fast-within-just-over-100", "latency measure mobilenet_v3_small --fast-within 100.4", "got 100.4%"),
    case("probe-zero-seconds", "latency probe --seconds 0", "--seconds", "must be > 0"),
    # -- latency validate (must refuse before refitting or measuring)
    case("validate-negative-wait", "latency validate --suite --wait -1", "--wait", "must be >= 0"),
    case("validate-fast-within-over-100", "latency validate --device good --suite --wait 5 --fast-within 150",
         "--fast-within", "150%"),
    case("validate-n-zero", "latency validate --n 0", "--n", "must be >= 1"),
    case("validate-passes-zero", "latency validate --passes 0", "--passes"),
    case("validate-unknown-space", "latency validate --device good --space nas", "unknown search space"),
    case("validate-plot-is-a-folder", "latency validate --device good --plot {in}/folder.json", "--plot", "is a folder"),
    case("validate-unknown-family", "latency validate --device good --suite mnasnet,resnets", "unknown network family",
         "'resnets'", "trimmed", "mnasnet_cifar"),
    case("validate-suite-with-space", "latency validate --device good --suite --space mnasnet", "--space",
         "name the families"),
    case("validate-family-as-a-space", "latency validate --device good --space references", "unknown search space",
         "references"),
    case("validate-plot-under-a-file", "latency validate --device good --plot {in}/a_file/p.png", "is a file"),
    case("validate-table-of-another-onnxruntime", "latency validate --device oldort", "onnxruntime 1.0.0", "rebuild"),
    case("validate-with-other-threads", "latency validate --device good --threads 2", "threads=1", "--threads"),
    case("validate-table-of-another-device", "latency validate --device foreign", "'phone'"),
    case("validate-local-table-of-another-onnxruntime", "latency validate", "onnxruntime 1.0.0", stale_local=True),
    case("validate-unknown-device", "latency validate --device nowhere", "no latency table", "latency build"),
    # -- latency show
    case("lshow-table-of-another-device", "latency show --device foreign", "'phone'", "not 'foreign'"),
    case("lshow-corrupted-table", "latency show --device corrupt", "checksum mismatch"),
    case("lshow-metadata-not-json", "latency show --device badmeta", "not valid JSON"),
    case("lshow-unknown-device", "latency show --device nowhere", "no latency table", "latency build --device nowhere"),
    # -- search (must refuse before reading data, starting Ray or building a table)
    case("search-target-negative", "search --target-ms -5", "--target-ms", "must be > 0"),
    case("search-target-inf", "search --target-ms inf", "--target-ms", "finite"),
    case("search-target-string", "search --target-ms fast", "--target-ms", "not a number"),
    case("search-target-missing", "search --trials 4", "--target-ms", "required"),
    case("search-trials-zero", "search --target-ms 15 --trials 0", "--trials", "must be >= 1"),
    case("search-epochs-nan", "search --target-ms 15 --epochs nan", "--epochs", "finite"),
    case("search-concurrency-zero", "search --target-ms 15 --concurrency 0", "--concurrency"),
    case("search-gpus-negative", "search --target-ms 15 --gpus-per-trial -1", "--gpus-per-trial", ">= 0"),
    case("search-gpus-nan", "search --target-ms 15 --gpus-per-trial nan", "--gpus-per-trial", "finite"),
    case("search-lr-zero", "search --target-ms 15 --lr 0", "--lr", "must be > 0"),
    case("search-time-budget-negative", "search --target-ms 15 --time-budget -60", "--time-budget"),
    case("search-latency-resolution-zero", "search --target-ms 15 --latency-resolution 0", "--latency-resolution"),
    case("search-batch-size-zero", "search --target-ms 15 --batch-size 0", "--batch-size", "must be >= 1"),
    case("search-data-limit-negative", "search --target-ms 15 --data-limit -1", "--data-limit"),
    case("search-alpha-positive", "search --target-ms 15 --alpha 0.5", "--alpha", "<= 0"),
    case("search-w-and-alpha", "search --target-ms 15 --w -0.1 --alpha -0.1", "not allowed with"),
    case("search-unknown-controller", "search --target-ms 15 --controller sgd", "--controller", "invalid choice"),
    case("search-unknown-strategy", "search --target-ms 15 --strategy tpe", "--strategy", "invalid choice", "evolution"),
    case("search-unknown-space", "search --target-ms 15 --device good --space nas", "unknown search space"),
    case("search-device-not-a-name", "search --target-ms 15 --device ../good", "not usable as a folder name"),
    case("search-table-of-another-device", "search --target-ms 15 --device foreign", "'phone'"),
    case("search-corrupted-table", "search --target-ms 15 --device corrupt", "checksum mismatch"),
    case("search-local-table-of-another-onnxruntime", "search --target-ms 15", "onnxruntime 1.0.0", stale_local=True),
    case("search-run-name-taken", "search --target-ms 15 --device good --name taken", "already exists", "--resume"),
    case("search-resume-options-not-json", "search --target-ms 15 --resume --name broken", "options.json",
         "is unreadable", "cannot be resumed"),
    case("search-data-of-unknown-format", "search --target-ms 15 --device good --data {in}/a_file",
         "unknown data format"),
    case("search-train-resolution-too-small", "search --target-ms 15 --device good --train-resolution 1",
         "training resolution 1px is too small", "even with every stride at 1"),
    case("search-unknown-scheduler", "search --target-ms 15 --scheduler hyperband", "--scheduler", "invalid choice"),
    case("search-grace-longer-than-trial", "search --target-ms 15 --scheduler asha --grace-epochs 3",
         "--grace-epochs 3 is not shorter than a trial", "--epochs 2"),
    case("search-reduction-factor-one", "search --target-ms 15 --scheduler asha --reduction-factor 1",
         "--reduction-factor", "above 1"),
    case("search-proxy-min-map-zero", "search --target-ms 15 --proxy-min-map 0", "--proxy-min-map", "must be >= 1"),
    # -- netadapt (must refuse before reading data, training the seed or starting Ray)
    case("netadapt-target-zero", f"netadapt {SEED} --target-ms 0", "--target-ms", "must be > 0"),
    case("netadapt-target-nan", f"netadapt {SEED} --target-ms nan", "--target-ms", "finite"),
    case("netadapt-target-ratio-one", f"netadapt {SEED} --target-ratio 1", "--target-ratio", "between 0 and 1"),
    case("netadapt-both-targets", f"netadapt {SEED} --target-ms 1 --target-ratio 0.5", "not allowed with"),
    case("netadapt-delta-zero", f"netadapt {SEED} --delta 0", "--delta"),
    case("netadapt-decay-negative", f"netadapt {SEED} --decay -0.9", "--decay"),
    case("netadapt-steps-negative", f"netadapt {SEED} --steps -1", "--steps", ">= 0"),
    case("netadapt-final-epochs-inf", f"netadapt {SEED} --final-epochs inf", "--final-epochs", "finite"),
    case("netadapt-workers-string", f"netadapt {SEED} --workers two", "--workers", "not an integer"),
    case("netadapt-max-iterations-zero", f"netadapt {SEED} --max-iterations 0", "--max-iterations"),
    case("netadapt-min-channels-zero", f"netadapt {SEED} --min-channels 0", "--min-channels"),
    case("netadapt-unknown-select", f"netadapt {SEED} --select best", "--select", "invalid choice"),
    case("netadapt-unknown-importance", f"netadapt {SEED} --importance random", "--importance", "invalid choice"),
    case("netadapt-channel-step-zero", f"netadapt {SEED} --channel-step 0", "--channel-step"),
    case("netadapt-seed-missing", "netadapt --seed {in}/none.json", "none.json", "no such file"),
    case("netadapt-seed-folder", "netadapt --seed {in}/folder.json", "is a folder"),
    case("netadapt-seed-wrong-type", "netadapt --seed {in}/str_kernel.json", "layers[0].kernel", "is not an integer"),
    case("netadapt-seed-unknown-field", "netadapt --seed {in}/unknown_field.json", "unknown field"),
    case("netadapt-weights-missing", f"netadapt {SEED} --device good --weights {{in}}/none.pt", "none.pt",
         "no such weights file"),
    case("netadapt-weights-folder", f"netadapt {SEED} --device good --weights {{in}}/folder.json",
         "is a folder, not a weights file"),
    case("netadapt-weights-junk", f"netadapt {SEED} --device good --weights {{in}}/junk.pt",
         "not a readable weights file"),
    case("netadapt-unknown-space", f"netadapt {SEED} --device good --space nas", "unknown search space"),
    case("netadapt-device-not-a-name", f"netadapt {SEED} --device ../good", "not usable as a folder name"),
    case("netadapt-unknown-device", f"netadapt {SEED} --device nowhere", "no latency table", "latency build"),
    case("netadapt-table-of-another-device", f"netadapt {SEED} --device foreign", "'phone'"),
    case("netadapt-table-of-another-onnxruntime-kept-local", f"netadapt {SEED}", "onnxruntime 1.0.0",
         stale_local=True),
    case("netadapt-name-not-a-name", f"netadapt {SEED} --name ../x", "--name"),
    case("netadapt-name-taken", f"netadapt {SEED} --device good --name taken", "already holds a run", "--resume"),
    case("netadapt-resume-nothing", f"netadapt {SEED} --device good --resume", "to resume"),
    case("netadapt-resume-invocation-not-json", "netadapt --resume --name broken", "invocation.json",
         "is unreadable", "start a new run"),
    case("netadapt-data-missing", f"netadapt {SEED} --device good --data {{in}}/no_data", "no_data", "does not exist"),
]


@pytest.mark.parametrize("cmd,needles,stale_local", CASES)
def test_bad_input(world, monkeypatch, cmd, needles, stale_local):
    monkeypatch.setenv("HWNAS_RESULTS", str(world / ("results_stale" if stale_local else "results")))
    argv = [a.replace("{in}", str(world / "in")).replace("{out}", str(world / "out")) for a in cmd.split(" ")]
    before = _snapshot(world)
    proc = run_main(*argv)
    assert_one_line_error(proc, *needles)
    assert _snapshot(world) == before, "a failing command changed, added or removed files"
    ray = sys.modules.get("ray")
    assert ray is None or not ray.is_initialized(), "bad input must be refused before Ray starts"


def test_the_prepared_inputs_are_valid_where_they_should_be(world, tmp_path, monkeypatch):
    """The cases above fail for the reason they name, not because their good parts are broken:
    the good table loads, the good measurements import, the seed loads."""
    res = tmp_path / "results"
    shutil.copytree(world / "results" / "latency" / "good", res / "latency" / "good")
    monkeypatch.setenv("HWNAS_RESULTS", str(res))
    assert run_main("latency", "show", "--device", "good").returncode == 0
    proc = run_main("latency", "import", str(world / "in" / "export" / "ok.csv"), "--device", "good", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["units"] > 0
    assert run_main("space", "show", str(world / "in" / "seed.json")).returncode == 0


# ---- unreadable files (chmod 000) ----------------------------------------------------------------

@pytest.mark.parametrize("command,needle", [
    (["space", "show"], "permission denied"),
    (["latency", "import"], "cannot read the measurements file"),
])
def test_unreadable_file(tmp_path, command, needle):
    p = tmp_path / "locked.json"
    p.write_text("{}")
    p.chmod(0)
    try:
        if os.access(p, os.R_OK):
            pytest.skip("running as root: chmod 000 does not stop reads (the folder-where-a-file-goes cases still run)")
        args = [*command, str(p)] + (["--device", "phone"] if command[0] == "latency" else [])
        assert_one_line_error(run_main(*args), needle)
    finally:
        p.chmod(0o644)


# ---- no command, unknown command, --help everywhere ----------------------------------------------

def test_no_command_and_unknown_command_are_one_line_in_a_real_process():
    assert_one_line_error(run_cli(), "COMMAND", "required", "--help")
    assert_one_line_error(run_cli("frobnicate"), "invalid choice", "frobnicate")
    assert_one_line_error(run_cli("latency"), "SUBCOMMAND", "latency --help")
    assert_one_line_error(run_cli("space", "show", str(Path("no") / "such.json")), "no such file")


HELP = [["--help"], ["space", "--help"], ["space", "show", "--help"], ["space", "sample", "--help"],
        ["space", "list", "--help"], ["export", "--help"], ["latency", "--help"],
        *[["latency", c, "--help"] for c in ("measure", "predict", "build", "export", "import", "validate", "show")],
        ["search", "--help"], ["netadapt", "--help"]]


@pytest.mark.parametrize("argv", HELP, ids=lambda a: "-".join(a[:-1]) or "top")
def test_help_exits_0(argv):
    proc = run_main(*argv)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert "usage: cli.py" in proc.stdout and "--help" in proc.stdout


@pytest.mark.parametrize("command,required", [(["search"], ["--target-ms", "15"]), (["netadapt"], [])])
def test_batch_size_help_shows_the_real_default(command, required):
    import re

    import cli

    args = cli.build_parser().parse_args([*command, *required])
    default = args.batch_size
    if command == ["search"]:  # search's options take their defaults from SearchOptions (None: not given)
        from search.commands import options_from_args

        assert default is None
        default = options_from_args(args)[0].batch_size
    text = run_main(*command, "--help").stdout
    shown = re.search(r"--batch-size BATCH_SIZE\s+training batch size \(default (\d+)\)", text)
    assert shown and int(shown.group(1)) == default
