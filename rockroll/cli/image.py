"""`rockroll image`: build, list and remove base images."""

from __future__ import annotations

import argparse
import time

from rich.table import Table

from rockroll.cli.common import Verbs, add, err, out, verbs


def register(nouns: Verbs) -> None:
    parser = nouns.add_parser("image", help="build, list and remove base images")
    commands = verbs(parser)
    build = add(
        commands,
        "build",
        build_image,
        "build a Debian base image with debootstrap",
        example="rockroll image build base",
    )
    build.add_argument("name", nargs="?", default="base")
    build.add_argument("--suite", default="bookworm", help="Debian release (default bookworm)")
    build.add_argument("--mirror", help="Debian mirror URL (default: the host's)")
    build.add_argument("--force", action="store_true", help="rebuild even if it exists")
    add(commands, "ls", list_images, "list built images", example="rockroll image ls")
    rm = add(
        commands, "rm", remove_image, "remove an image", example="rockroll image rm python3.13"
    )
    rm.add_argument("name")


def build_image(args: argparse.Namespace) -> int:
    from rockroll.errors import ImageNotFound
    from rockroll.sandbox import images

    if not args.force:
        try:
            image = images.get_image(args.name)
            out.print(f"image [bold]{args.name}[/] is already built at {image.path}")
            return 0
        except ImageNotFound:
            pass
    with err.status(f"building image {args.name} (a few minutes the first time)"):
        images.build_image(
            args.name, suite=args.suite, mirror=args.mirror, force=args.force, log=err.log
        )
    return 0


def list_images(args: argparse.Namespace) -> int:
    from rockroll.sandbox import images

    table = Table("name", "suite", "size", "built", "path")
    for image in images.list_images():
        meta = image.meta
        table.add_row(
            image.name,
            str(meta.get("suite", "?")),
            f"{meta.get('size_bytes', 0) / 2**20:.0f} MiB",
            time.strftime("%Y-%m-%d %H:%M", time.localtime(meta.get("created", 0))),
            str(image.path),
        )
    out.print(table)
    return 0


def remove_image(args: argparse.Namespace) -> int:
    from rockroll.sandbox import images

    images.remove_image(args.name)
    out.print(f"removed image {args.name}")
    return 0
