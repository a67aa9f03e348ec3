"""Split TinyImageNet's labelled val set into the ImageFolder trees val/ and test/ (authors' val_format.py).

    python val_format.py --data_dir ./data        # or ./data/tiny-imagenet-200

For every class, its val images sorted by file name (plain string order): the first 25 go to
val/<wnid>/images/, the other 25 to test/<wnid>/images/; val/images/ is then removed. As the authors,
training evaluates on test/ (half of the official val set); the search's val/ loader is unused.

Departures from the authors' script, on purpose:
* Deterministic: the authors filled val/ in filesystem glob order, which differs across machines.
* The official unlabelled test/ (test/images/) must be gone first, as the authors' README says. We refuse
  rather than delete or move it: nothing the user owns is touched without asking.
* Safe to re-run: an already formatted folder is reported and left alone, and an interrupted run resumes
  (each file's destination depends only on val_annotations.txt). Every file is checked before the first
  one moves.
"""
import os

from utils.base import UserError, is_plain_name, run_main

from utils.cli import make_parser

VAL_PER_CLASS = 25  # authors: 25 of the 50 val images per class stay in val/


def find_root(data_dir):
    """The tiny-imagenet-200 folder: data_dir itself, or data_dir/tiny-imagenet-200."""
    for root in (data_dir, os.path.join(data_dir, "tiny-imagenet-200")):
        if os.path.isdir(os.path.join(root, "val")):
            return root
    raise UserError(f"no val/ folder in {data_dir} or {os.path.join(data_dir, 'tiny-imagenet-200')}: "
                    "point --data_dir at the extracted tiny-imagenet-200")


def read_annotations(path):
    """val_annotations.txt (tab separated: file name, wnid, box) -> {wnid: sorted file names}."""
    if not os.path.isfile(path):
        raise UserError(f"{path} not found: is this the extracted tiny-imagenet-200 folder?")
    classes, seen = {}, set()
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            fields = line.rstrip("\n").split("\t")
            if len(fields) < 2 or not fields[0] or not fields[1] or fields[0] in seen:
                raise UserError(f"{path}:{lineno}: expected a new '<file>\\t<wnid>...' line, got {line.strip()!r}")
            # Both become path components of a move: a '../..' would move images out of the data tree.
            for what, name in (("file name", fields[0]), ("class id", fields[1])):
                if not is_plain_name(name):
                    raise UserError(f"{path}:{lineno}: the {what} {name!r} is not a plain name (no folders, "
                                    f"not . or ..); nothing was moved")
            seen.add(fields[0])
            classes.setdefault(fields[1], []).append(fields[0])
    return {wnid: sorted(files) for wnid, files in classes.items()}


def is_formatted(root):
    val, test = os.path.join(root, "val"), os.path.join(root, "test")
    return (not os.path.isdir(os.path.join(val, "images")) and os.path.isdir(test)
            and any(os.path.isdir(os.path.join(test, d, "images")) for d in os.listdir(test)))


def plan_moves(root, classes, val_per_class):
    """[(source, destination)] for the files still in val/images; fails before anything moves."""
    images = os.path.join(root, "val", "images")
    annotated = {name for files in classes.values() for name in files}
    stray = sorted(set(os.listdir(images)) - annotated)
    if stray:
        raise UserError(f"{os.path.join(images, stray[0])} is not in val_annotations.txt "
                        f"({len(stray)} such files); nothing was moved")
    moves = []
    for wnid, files in sorted(classes.items()):
        for rank, name in enumerate(files):
            split = "val" if rank < val_per_class else "test"
            src, dst = os.path.join(images, name), os.path.join(root, split, wnid, "images", name)
            if os.path.isfile(src):
                moves.append((src, dst))
            elif not os.path.isfile(dst):  # neither still to move nor moved by an interrupted run
                raise UserError(f"{src} is listed in val_annotations.txt but missing; nothing was moved")
    return moves


def format_val(root, val_per_class=VAL_PER_CLASS, log=print):
    """Make val/ and test/ under root; returns the number of files moved (0 when already formatted)."""
    val, test = os.path.join(root, "val"), os.path.join(root, "test")
    if os.path.isdir(os.path.join(test, "images")):
        raise UserError(f"{test} still holds the official unlabelled test set: delete it first "
                        "(the authors' README does), then run again")
    if is_formatted(root):
        log(f"{root} is already formatted (val/<wnid>/images and test/<wnid>/images); nothing to do")
        return 0
    classes = read_annotations(os.path.join(val, "val_annotations.txt"))
    if not os.path.isdir(os.path.join(val, "images")):
        raise UserError(f"{os.path.join(val, 'images')} not found and {root} is not formatted either")
    moves = plan_moves(root, classes, val_per_class)
    for src, dst in moves:
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        os.replace(src, dst)
    os.rmdir(os.path.join(val, "images"))
    to_test = sum(os.path.relpath(dst, root).split(os.sep)[0] == "test" for _, dst in moves)
    log(f"moved {len(moves)} images of {len(classes)} classes: {len(moves) - to_test} to {val}, "
        f"{to_test} to {test}")
    return len(moves)


def main(argv=None):
    parser = make_parser(__doc__.splitlines()[0])
    parser.add_argument("--data_dir", default="./data",
                        help="the tiny-imagenet-200 folder, or the folder that contains it")
    parser.add_argument("--val_per_class", type=int, default=VAL_PER_CLASS,
                        help="images per class kept in val/ (sorted by file name); the rest go to test/")
    args = parser.parse_args(argv)
    if args.val_per_class < 0:
        raise UserError(f"--val_per_class must be >= 0, got {args.val_per_class}")
    format_val(find_root(args.data_dir), args.val_per_class)


if __name__ == "__main__":
    run_main(main)
