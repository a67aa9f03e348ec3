"""Pre-train the default (ratio 1, uniform) network with gates, for the Li et al. / slimming baseline.

Writes <plots_dir>/<model>/<save>_100.pk (curves), <models_dir>/<model>/<save>_checkpoint.pt
(resumable) and <save>_best_model.pt (best test epoch, what fine_tune.py --resume <save> loads). The
gates are all-ones identities here (never trained); they are built so that fine_tune.py can mask them.
Epochs follow the authors' override: 300 (CIFAR-like, x0.1 at 100/200/250), 150 on TinyImageNet.
"""
from model import build_model, get_spec
from utils import io, run, swipe
from utils.accel import set_deterministic, set_precision
from utils.base import CIFAR_LIKE, RESUMES_EPOCH, log, resolve_device, run_main
from utils.cli import make_parser
from utils.data import NUM_CLASSES
from utils.progress import Clock, Position
from utils.train import RECIPES, prepare_model, set_seed

DATASETS = CIFAR_LIKE + ("tinyimagenet",)
RATIO = 1.0
EPOCHS_HELP = (f"training epochs (default: {RECIPES['scratch_cifar']['epochs']}, or "
               f"{RECIPES['scratch_tiny']['epochs']} on tinyimagenet)")


def main(argv=None):
    parser = swipe.add_recipe_args(make_parser(__doc__), "scratch_cifar", datasets=DATASETS, dataset="CIFAR10",
                                   by_dataset=True, help={"--epochs": EPOCHS_HELP})
    args = parser.parse_args(argv)
    swipe.check_recipe_args(args, DATASETS, "{model}_standard_{tag}")
    device = resolve_device(args.device)
    epochs = args.epochs or swipe.scratch_recipe(args.dataset)["epochs"]
    path = io.result_path(args.plots_dir, args.model, args.save, RATIO)
    num_classes = NUM_CLASSES[args.dataset]
    widths = list(get_spec(args.model).DEFAULT_WIDTHS)
    schedule = swipe.schedule_for(args.dataset)
    settings = run.RunSettings.from_args(args)
    fingerprint = run.fingerprint_of(settings, method="uniform", ratio=RATIO, widths=widths, schedule=schedule)
    if run.finished(path, {**fingerprint, "epochs": epochs}, settings.overwrite):
        log(f"{path} exists, nothing to do (same settings)")
        return
    _, best = run.checkpoint_paths(args.models_dir, args.model, args.save)
    settings = run.with_seed(settings, args.save)
    set_precision(device, settings.precision)
    set_deterministic(device, settings.deterministic)
    loaders = run.load_data(settings, device)
    run.output_dirs(settings)
    set_seed(run.init_seed(settings.seed, RATIO))
    net = prepare_model(build_model(args.model, widths, num_classes, gates=True, bn_init=args.bn_init), device)
    name = f"{args.model} {args.dataset} train_norm seed={settings.seed}"
    run.train_and_save(net, settings, device=device, loaders=loaders, path=path, stem=args.save, schedule=schedule,
                       epochs=epochs, method="uniform", ratio=RATIO, widths=widths, name=name,
                       keep=args.keep_checkpoints, position=Position("ratio 1/1", Clock(epochs)))
    log(f"{name}: wrote {path}" + ("" if args.keep_checkpoints == "none" else f"; best model {best}"))


if __name__ == "__main__":
    run_main(main, RESUMES_EPOCH)
