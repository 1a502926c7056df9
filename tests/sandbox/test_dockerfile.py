"""Dockerfiles built without Docker: parsing, real builds in sandboxes, caching and errors."""

from __future__ import annotations

import json
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from rockroll import Sandbox
from rockroll.sandbox.dockerfile import BuildError, build, parse
from rockroll.sandbox.images import Image, get_image
from rockroll.sandbox.spec import DEFAULT_PATH
from rockroll.sandbox.standins import StandInError, from_reference, normalize, stand_in

# -- parsing -----------------------------------------------------------------------------------


def test_parse_joins_continuations_drops_comments_and_keeps_line_numbers() -> None:
    text = (
        "# a comment before everything\n"  # 1
        "FROM python:3.11-slim\n"  # 2
        "\n"  # 3
        "RUN echo a \\\n"  # 4
        "    # a comment inside the continued line\n"  # 5
        "    && echo b \\\n"  # 6
        "\n"  # 7: Docker skips blank lines inside a continued line too
        "    && echo c\n"  # 8
        "env\tA=1\n"  # 9: lower case, tab after the keyword
        "  # indented comment\n"  # 10
        'CMD ["python3", "-V"]\n'  # 11
    )
    # Whitespace where lines were joined is not significant: compare words.
    got = [(i.line, i.keyword, " ".join(i.args.split())) for i in parse(text, "df")]
    assert got == [
        (2, "FROM", "python:3.11-slim"),
        (4, "RUN", "echo a && echo b && echo c"),
        (9, "ENV", "A=1"),
        (11, "CMD", '["python3", "-V"]'),
    ]


def test_parse_accepts_args_before_from() -> None:
    got = parse("ARG V=3.11\nFROM python:${V}-slim\nRUN true\n")
    assert [i.keyword for i in got] == ["ARG", "FROM", "RUN"]


def test_unknown_instruction_names_the_file_and_line() -> None:
    text = "FROM python:3.11-slim\nRUN true\n\nFROBNICATE x\n"
    with pytest.raises(BuildError) as err:
        parse(text, "/ctx/Dockerfile")
    assert "/ctx/Dockerfile:4" in str(err.value)
    assert "FROBNICATE" in str(err.value)


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("RUN echo hi\nFROM python:3.11-slim\n", "x/Dockerfile:1"),
        ("ARG A=1\nRUN echo $A\n", "x/Dockerfile:2"),
        ("# only a comment\n\n", "x/Dockerfile"),
    ],
)
def test_a_dockerfile_must_start_with_from(text: str, where: str) -> None:
    with pytest.raises(BuildError, match="must start with FROM") as err:
        parse(text, "x/Dockerfile")
    assert str(err.value).startswith(where + ":")


def test_a_file_ending_inside_a_continued_line_is_an_error() -> None:
    with pytest.raises(BuildError, match=r"df:2: the file ends inside a continued line"):
        parse("FROM python:3.11-slim\nRUN echo a \\\n", "df")


# -- FROM mapping ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ref", "image", "normal"),
    [
        ("python:3.11-slim", "base", "python:3.11-slim"),
        ("docker.io/library/python:3.11-slim", "base", "python:3.11-slim"),
        ("public.ecr.aws/docker/library/python:3.12-slim-bookworm", "python3.13", None),
        (f"python:3.13@sha256:{'ab' * 32}", "python3.13", "python:3.13"),
        ("index.docker.io/library/ubuntu", "base", "ubuntu:latest"),
        ("ghcr.io/laude-institute/t-bench/ubuntu-24-04:20250624", "python3.13", None),
        ("ghcr.io/laude-institute/t-bench/ubuntu-24-04", "python3.13", None),
        ("buildpack-deps:jammy", "base", None),
    ],
)
def test_from_references_are_normalised_then_mapped(ref: str, image: str, normal: str) -> None:
    found = stand_in(ref)
    assert found.image == image and found.ref == ref
    if normal is not None:
        assert normalize(ref) == normal


def test_stand_ins_say_what_they_add_and_how_they_differ() -> None:
    py312 = stand_in("python:3.12")
    assert {"python-is-python3", "python3-pip"} <= set(py312.packages)
    assert py312.differs == ["Python 3.13 stands in for 3.12"] and py312.suite == "trixie"
    tb = stand_in("ghcr.io/laude-institute/t-bench/ubuntu-24-04:latest")
    assert {"tmux", "asciinema"} <= set(tb.packages) and "Ubuntu 24.04" in tb.differs[0]
    assert stand_in("buildpack-deps:jammy").packages[-1] == "tmux"


def test_from_flags_and_stage_names_are_not_the_image() -> None:
    assert from_reference("--platform=linux/amd64 python:3.11 AS build") == "python:3.11"
    assert from_reference("--platform linux/amd64 python:3.11") == "python:3.11"
    with pytest.raises(StandInError, match="no image named"):
        from_reference("--platform=linux/amd64")


def test_image_map_json_extends_the_table(tmp_path: Path, monkeypatch) -> None:
    table = tmp_path / "image-map.json"
    monkeypatch.setenv("ROCKROLL_IMAGE_MAP", str(table))
    with pytest.raises(StandInError, match=r"image-map\.json") as err:
        stand_in("registry.example/team/img:1")
    assert '"registry.example/team/img:1": "base"' in str(err.value)
    table.write_text(json.dumps({"registry.example/team/*": "base", "python:3.11*": "mine"}))
    assert stand_in("registry.example/team/img:1").image == "base"
    assert stand_in("python:3.11").image == "mine"  # the user's entry comes first
    table.write_text(json.dumps({"x/*": {"dockerfile": "nowhere/Dockerfile"}}))
    with pytest.raises(StandInError, match=r'entry "x/\*": no Dockerfile at .*nowhere'):
        stand_in("x/y:1")
    table.write_text(json.dumps({"x/*": {"packages": ["git"]}}))
    with pytest.raises(StandInError, match=r'needs "image" or "dockerfile"'):
        stand_in("x/y:1")
    table.write_text("{not json")
    with pytest.raises(StandInError, match="not valid JSON"):
        stand_in("registry.example/team/img:1")


# -- real builds -------------------------------------------------------------------------------

DOCKERFILE = """\
# built by tests/tasks/test_dockerfile.py
FROM python:3.11-slim
ARG GREETING=hello-{marker}
ENV PLAIN=one
ENV LEGACY two words
ENV PATH="/opt/tool/bin:$PATH"
RUN echo "$GREETING" > /greeting.txt
WORKDIR /app
COPY file.txt .
COPY data /data/
COPY data/ro.txt nested/
RUN echo built > made.txt && cat /greeting.txt > greeting-copy.txt
CMD ["python3", "-V"]
"""


@dataclass
class Built:
    dockerfile: Path
    context: Path
    image: Image
    log: list[str]
    marker: str
    seconds: float  # how long the build took (its steps ran)


def _context(root: Path, marker: str, content: str = "first content\n") -> Path:
    root.mkdir(parents=True)
    (root / "Dockerfile").write_text(DOCKERFILE.format(marker=marker))
    (root / "file.txt").write_text(content)
    (root / "data").mkdir()
    (root / "data" / "ro.txt").write_text("read-only data\n")
    (root / "data" / "ro.txt").chmod(0o444)
    (root / "data" / "sub").mkdir()
    (root / "data" / "sub" / "deep.txt").write_text("deep\n")
    return root


@pytest.fixture(scope="module")
def built(base_image: str, tmp_path_factory: pytest.TempPathFactory) -> Built:
    marker = uuid.uuid4().hex
    context = _context(tmp_path_factory.mktemp("df") / "ctx", marker)
    log: list[str] = []
    started = time.monotonic()
    image = build(context / "Dockerfile", log=log.append)
    return Built(context / "Dockerfile", context, image, log, marker, time.monotonic() - started)


def _built_names(log: list[str]) -> list[str]:
    return [line.split()[1] for line in log if line.startswith("built ")]


def test_build_runs_every_step_and_files_are_in_the_image(built: Built) -> None:
    image = built.image
    # Two layers were built (steps before the first COPY, then the rest) on the stand-in for
    # python:3.11 (its own layer on the base image, built first unless an earlier test did).
    stand_in = get_image(image.meta["parent"]).meta["parent"]
    assert _built_names(built.log) in (
        [image.meta["parent"], image.name],
        [stand_in, image.meta["parent"], image.name],
    )
    assert get_image(stand_in).meta["parent"] == "base"
    with Sandbox.create(image.name) as sb:
        assert sb.read_text("/greeting.txt") == f"hello-{built.marker}\n"  # ARG default in RUN
        assert sb.read_text("/app/file.txt") == "first content\n"  # COPY file .
        assert sb.read_text("/data/ro.txt") == "read-only data\n"  # COPY dir
        assert sb.read_text("/data/sub/deep.txt") == "deep\n"
        assert sb.read_text("/app/nested/ro.txt") == "read-only data\n"  # COPY into dir/
        assert sb.read_text("/app/made.txt") == "built\n"  # RUN in WORKDIR
        # `cat` was found: ENV PATH=...:$PATH kept the system directories.
        assert sb.read_text("/app/greeting-copy.txt") == f"hello-{built.marker}\n"


def test_image_config_records_env_workdir_and_cmd(built: Built) -> None:
    config = built.image.config
    assert config["env"] == {
        "PLAIN": "one",
        "LEGACY": "two words",
        "PATH": f"/opt/tool/bin:{DEFAULT_PATH}",
    }
    assert config["workdir"] == "/app"
    assert config["cmd"] == ["python3", "-V"]
    assert config["args"]["GREETING"] == f"hello-{built.marker}"


def test_copied_file_keeps_its_mode_and_root_inside_may_still_overwrite_it(
    built: Built,
) -> None:
    assert (built.context / "data" / "ro.txt").stat().st_mode & 0o777 == 0o444
    stored = (built.image.rootfs / "data" / "ro.txt").stat()
    assert stored.st_mode & 0o777 == 0o444 and stored.st_uid == 0  # as `docker build` leaves it
    with Sandbox.create(built.image.name) as sb:
        nobody = sb.exec("echo changed > /data/ro.txt", user="nobody")
        assert nobody.exit_code != 0 and "Permission denied" in nobody.stderr
        res = sb.exec("echo changed > /data/ro.txt && cat /data/ro.txt")  # root's DAC override
        assert res.ok, res.output
        assert res.stdout == "changed\n"


def test_building_again_reuses_the_image(built: Built) -> None:
    stamp = (built.image.path / "image.json").stat().st_mtime_ns
    log: list[str] = []
    started = time.monotonic()
    again = build(built.dockerfile, log=log.append)
    seconds = time.monotonic() - started
    assert again.name == built.image.name
    # Hashing the context and finding the image, not running the steps again: a fraction of
    # the first build, measured on the same machine under the same load.
    assert seconds < built.seconds / 2, (seconds, built.seconds)
    assert _built_names(log) == []
    assert (built.image.path / "image.json").stat().st_mtime_ns == stamp


def test_what_goes_into_the_name(built: Built, tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    shutil.copytree(built.context, ctx)
    # Files the Dockerfile does not copy, and its comments, do not change the image.
    (ctx / "unrelated.txt").write_text("not copied\n")
    text = (ctx / "Dockerfile").read_text()
    (ctx / "Dockerfile").write_text("# another comment\n" + text)
    assert build(ctx / "Dockerfile").name == built.image.name
    # A copied file's mode does.
    (ctx / "data" / "sub" / "deep.txt").chmod(0o755)
    assert build(ctx / "Dockerfile").name != built.image.name


def test_changed_copied_content_rebuilds_only_the_layer_after_the_first_copy(
    built: Built, tmp_path: Path
) -> None:
    other = _context(tmp_path / "ctx", built.marker, content="second content\n")
    log: list[str] = []
    image = build(other / "Dockerfile", log=log.append)
    assert image.name != built.image.name
    assert _built_names(log) == [image.name]  # the steps before COPY came from the cache
    assert image.meta["parent"] == built.image.meta["parent"]
    assert image.layers[1:] == built.image.layers[1:]
    assert image.layers[0] != built.image.layers[0]
    assert len(image.layers) == 4 and image.layers[-1].parent.name == "base"  # base, stand-in
    with Sandbox.create(image.name) as sb:
        assert sb.read_text("/app/file.txt") == "second content\n"
        assert sb.read_text("/greeting.txt") == f"hello-{built.marker}\n"


def test_a_copy_after_a_run_is_a_layer_that_only_its_own_files_rebuild(
    base_image: str, tmp_path: Path
) -> None:
    """As Docker's per-instruction cache: two Dockerfiles that differ only in what a last COPY
    copies share every layer before it, the expensive RUN included."""
    marker = uuid.uuid4().hex
    images, logs = [], []
    for n in (1, 2):
        ctx = tmp_path / f"ctx{n}"
        (ctx / "repo").mkdir(parents=True)
        (ctx / "repo" / "lib.py").write_text("X = 1\n")
        (ctx / "change").mkdir()
        (ctx / "change" / "lib.py").write_text(f"X = {n + 1}\n")
        (ctx / "Dockerfile").write_text(
            "FROM python:3.11-slim\nWORKDIR /app\nCOPY repo/ /app/\n"
            f"RUN echo {marker} > /app/installed\nCOPY change/ /app/\n"
        )
        log: list[str] = []
        images.append(build(ctx / "Dockerfile", log=log.append))
        logs.append(_built_names(log))
    first, second = images
    assert first.name != second.name
    assert first.meta["parent"] == second.meta["parent"]  # COPY repo + RUN: one shared layer
    assert logs[1] == [second.name]  # only the last COPY was built again
    assert sum(p.stat().st_size for p in (second.path / "rootfs").rglob("*") if p.is_file()) < 100
    with Sandbox.create(second.name) as sb:
        assert sb.read_text("/app/lib.py") == "X = 3\n"
        assert sb.read_text("/app/installed") == f"{marker}\n"


def _dockerfile(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "Dockerfile"
    path.write_text(f"FROM python:3.11-slim\nRUN echo {uuid.uuid4().hex}\n{body}")
    return path


def test_failing_run_names_the_line_and_shows_the_output(base_image: str, tmp_path: Path) -> None:
    marker = uuid.uuid4().hex
    path = _dockerfile(
        tmp_path, f"WORKDIR /w\nRUN echo out-{marker} && echo err-{marker} >&2 && exit 3\n"
    )
    with pytest.raises(BuildError) as err:
        build(path)
    message = str(err.value)
    assert f"{path}:4: RUN echo out-{marker}" in message
    assert "exit code 3" in message
    assert f"out-{marker}" in err.value.output and f"err-{marker}" in err.value.output


def test_unknown_base_image_explains_image_map(base_image: str, tmp_path: Path) -> None:
    path = tmp_path / "Dockerfile"
    path.write_text("FROM some/unknown:image\nRUN true\n")
    with pytest.raises(BuildError) as err:
        build(path)
    assert "some/unknown:image" in str(err.value)
    assert "image-map.json" in str(err.value)


def test_a_python_image_stands_in_with_python_pip_and_no_pep_668_marker(
    base_image: str, tmp_path: Path
) -> None:
    path = tmp_path / "Dockerfile"
    path.write_text(
        "FROM --platform=linux/amd64 "
        f"docker.io/library/python:3.11-slim@sha256:{'0f' * 32} AS app\n"
        "RUN python -c 'print(42)' > /py.txt && python -m pip --version\n"
        "RUN ! ls /usr/lib/python3*/EXTERNALLY-MANAGED\n"
    )
    image = build(path)
    with Sandbox.create(image.name) as sb:
        assert sb.read_text("/py.txt") == "42\n"


def test_terminal_bench_ubuntu_base_stands_in_with_its_tools(
    base_image: str, tmp_path: Path
) -> None:
    path = tmp_path / "Dockerfile"
    path.write_text(
        "FROM ghcr.io/laude-institute/t-bench/ubuntu-24-04:20250624\n"
        "RUN tmux -V > /tools && asciinema --version >> /tools && python3 --version >> /tools\n"
    )
    log: list[str] = []
    image = build(path, log=log.append)
    with Sandbox.create(image.name) as sb:
        tools = sb.read_text("/tools")
    assert tools.startswith("tmux ") and "asciinema" in tools and "Python 3.13" in tools
    assert any("differs: Debian 13 stands in for Ubuntu 24.04" in line for line in log)


def test_an_alpine_dockerfile_builds_as_on_alpine(base_image: str, tmp_path: Path) -> None:
    """apk with Alpine's package names and flags, BusyBox's adduser/addgroup and applets."""
    path = tmp_path / "Dockerfile"
    path.write_text(
        "FROM alpine:3.20\n"
        "RUN apk update && apk add --no-cache --virtual .tools jq bind-tools py3-pip "
        "&& apk add -U --no-cache 'tzdata=2024a-r0' && apk del .tools && apk add jq\n"
        "RUN addgroup -S app && adduser -S -D -h /srv/app -G app app && addgroup app users\n"
        "USER app\n"
        "RUN id > /srv/app/id && jq -n 1 > /srv/app/jq && nc --help 2>&1 | head -1 > /srv/app/nc\n"
    )
    log: list[str] = []
    image = build(path, log=log.append)
    with Sandbox.create(image.name) as sb:
        assert sb.exec("command -v pip3").exit_code != 0  # removed with .tools
        assert sb.read_text("/srv/app/jq") == "1\n"
        ident = sb.read_text("/srv/app/id")
        assert "uid=" in ident and "(app)" in ident and "(users)" in ident, ident
        assert "BusyBox" in sb.read_text("/srv/app/nc")
        assert sb.exec("test -f /usr/share/zoneinfo/UTC").exit_code == 0
        bad = sb.exec(["apk", "fetch", "jq"], user="root")
    assert bad.exit_code == 1 and "only add, del, update, upgrade and info" in bad.output
    assert any("differs: Debian 12 stands in for Alpine" in line for line in log)


def test_an_image_map_entry_may_name_a_dockerfile_to_build_the_stand_in_from(
    base_image: str, tmp_path: Path, monkeypatch
) -> None:
    marker = uuid.uuid4().hex
    (tmp_path / "toolchain").mkdir()
    (tmp_path / "toolchain" / "Dockerfile").write_text(
        f"FROM {base_image}\nRUN echo {marker} > /etc/toolchain\n"
    )
    table = tmp_path / "map.json"
    table.write_text(json.dumps({"myorg/toolchain:*": {"dockerfile": "toolchain/Dockerfile"}}))
    monkeypatch.setenv("ROCKROLL_IMAGE_MAP", str(table))
    task = tmp_path / "task"
    task.mkdir()
    (task / "Dockerfile").write_text("FROM myorg/toolchain:1.2\n" + "RUN cp /etc/toolchain /seen\n")
    log: list[str] = []
    image = build(task / "Dockerfile", log=log.append)
    with Sandbox.create(image.name) as sb:
        assert sb.read_text("/seen") == f"{marker}\n"
    assert any(str(tmp_path / "toolchain" / "Dockerfile") in line for line in log)
    assert build(task / "Dockerfile").name == image.name  # built once: the second is cached


def test_a_second_from_is_refused_with_its_line(base_image: str, tmp_path: Path) -> None:
    path = tmp_path / "Dockerfile"
    path.write_text(f"FROM {base_image} AS build\nRUN true\nFROM {base_image}\n")
    with pytest.raises(BuildError, match=r"Dockerfile:3: multi-stage builds are not supported"):
        build(path)


def test_add_from_a_url_is_refused(base_image: str, tmp_path: Path) -> None:
    path = _dockerfile(tmp_path, "ADD https://example.com/tool.tar.gz /opt/\n")
    with pytest.raises(BuildError) as err:
        build(path)
    assert f"{path}:3: ADD" in str(err.value)
    assert "URL is not supported" in str(err.value)


def test_copy_of_a_missing_or_outside_file_is_refused(base_image: str, tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    path = _dockerfile(ctx, "COPY missing.txt /x\n")
    with pytest.raises(
        BuildError, match=r"Dockerfile:3: COPY missing\.txt /x: missing\.txt does not exist"
    ):
        build(path)
    (tmp_path / "secret.txt").write_text("outside\n")
    path = _dockerfile(ctx, "COPY ../secret.txt /x\n")
    with pytest.raises(BuildError, match="outside the build context"):
        build(path)


def test_missing_dockerfile(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="no such Dockerfile"):
        build(tmp_path / "Dockerfile")


def test_images_are_kept_read_only_by_sandboxes(built: Built) -> None:
    """A sandbox writing over an image file changes its own overlay, never the image."""
    with Sandbox.create(built.image.name) as sb:
        assert sb.exec("echo scribbled > /app/file.txt").ok
    assert (built.image.rootfs / "app" / "file.txt").read_text() == "first content\n"
