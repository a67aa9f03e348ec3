"""One of the paper's tables in one command: the whole protocol planned as jobs, run on this machine's
GPUs or submitted to SLURM, resumed when run again, and the table printed at the end.

    python reproduce.py --model vgg --dataset CIFAR100 --dry-run     # the plan as a shell script
    python reproduce.py --model vgg --dataset CIFAR100               # run it here, one job per GPU
    python reproduce.py --model vgg --dataset CIFAR100 --executor slurm --slurm_partition gpu
    python reproduce.py --model vgg --dataset CIFAR100 --status      # where it stands

The plan: the NeuralScale search (15 iterations) and the MorphNet-style search (--morph); per seed and
ratio, the swipes of uniform scaling, MorphNet-style (this plan's own --morph record: ratio_swipe.py
--prune_fname, plot_ratio.py --morph_record), NeuralScale early (iteration 1) and late (iteration 15);
per seed Li et al. (train_norm.py, then fine_tune.py); ConvCut with --convcut; last plot_ratio.py:
<out_dir>/table.md, its JSON table.jsonl, the figures. Every job is a command line of this project's
scripts with the authors' run names: --dry-run prints them, one per line in dependency order, with the
jobs and training images per stage. The options that change a result pass through to their jobs.

Local (the default): --workers processes, one per visible CUDA device (x --jobs_per_gpu), each job
pinned to its worker's GPU with CUDA_VISIBLE_DEVICES; 1 without a GPU. A line when a job starts and
ends (time, k/N, ETA from the finished jobs' durations), a tqdm bar on a terminal. Ctrl-C stops the
workers. A lock (<out_dir>/.reproduce.lock) refuses a second reproduce.py on the same folder.

SLURM (--executor slurm): plain sbatch, one job array per stage (--slurm_array_parallelism caps its
running tasks), chained with afterok dependencies, so you can log out; --requeue, so a preempted task
runs again and resumes from its checkpoint. --status (either executor) reads the logs, the exit records
and squeue: per stage jobs done, running, failed, pending, and the tail of each failed job's log.

Running the same command again skips finished jobs and resumes the others. Each job logs to
<out_dir>/logs/<job>.log; a failed job stops only the jobs that need it; the exit status is then 1.
"""
import argparse
import os
import shlex
import sys

from model import MODELS
from utils import executors, jobs as J, lock, plan, report
from utils.base import UserError, check_positive, log, positive_int, run_main, writable_dir
from utils.cli import check_pair, make_parser, spellings
from utils.data import LOADERS, NUM_CLASSES, TEST_ORDERS

REPO = os.path.dirname(os.path.abspath(__file__))
LOCK = ".reproduce.lock"
EXTRA_FAMILIES = {"search": ("search", "morph_search"), "swipe": ("swipe",), "pretrain": ("pretrain",),
                  "finetune": ("finetune",), "table": ("table",)}


def group(parser, title):
    """An argument group whose flags answer to both spellings, as the parser's own (utils.cli.spellings)."""
    g = parser.add_argument_group(title)
    add = g.add_argument
    g.add_argument = lambda *names, **kwargs: add(*spellings(names), **kwargs)
    return g


def add_plan_args(parser):
    g = group(parser, "the plan")
    g.add_argument("--model", default="vgg", choices=tuple(MODELS), help="network")
    g.add_argument("--dataset", default="CIFAR100", choices=sorted(NUM_CLASSES), help="data set")
    g.add_argument("--methods", nargs="+", choices=plan.PLAN_METHODS, default=list(plan.PAPER_METHODS),
                   help="the table's methods to train (li_magnitude: Li et al., at ratio 0.75 only)")
    g.add_argument("--convcut", action="store_true", help="add ConvCut (resnet18, mobilenetv2)")
    g.add_argument("--seeds", type=int, nargs="+", default=list(report.DEFAULT_SEEDS), help="training seeds (default: 0 1 2 3 4)")
    g.add_argument("--ratios", type=float, nargs="+", default=None,
                   help="width ratios (default: 0.25..2.0 by 0.25; 0.25..1.0 on tinyimagenet)")
    g.add_argument("--search_seed", type=int, default=0, help="the seed of both searches")
    g.add_argument("--out_dir", default="runs", help="every job's outputs (the scripts' --out_dir), logs/, "
                                                     "table.md and table.jsonl")


def add_job_args(parser):
    """The options that change a result; each goes to the jobs it concerns (utils/plan.py PASS_THROUGH).
    None: not passed, the script's own default holds."""
    from model.bn_init import BN_INITS
    from utils.accel import PRECISIONS
    g = group(parser, "passed to the jobs (default: each script's own)")
    add = g.add_argument
    add("--epochs", type=positive_int, help="training epochs of the swipes and train_norm.py (default: 300; 150 on tinyimagenet)")
    add("--finetune_epochs", type=positive_int, help="fine_tune.py's epochs (default: 40; 20 on tinyimagenet)")
    add("--search_epochs", type=positive_int, help="most epochs per search iteration (default: 300)")
    add("--iterations", type=positive_int, help="NeuralScale search iterations (default: 15); the late swipes use the last")
    add("--warmup", type=int, help="search epochs before pruning (default: 10)")
    add("--search_batch_size", type=positive_int, help="search minibatch (default: 256; 100 on tinyimagenet)")
    add("--prune_every", type=positive_int, help="search: minibatches per pruning step (default: 50; 100 on tinyimagenet)")
    add("--prune_per_step", type=positive_int, help="search: units pruned per step (default: 10)")
    add("--search_ratio", type=float, help="search budget, x the default network's (default: 1)")
    add("--same_norm", action="store_true", help="search: the training scripts' normalisation (default: off)")
    add("--budget", choices=("params", "macs"), help="NeuralScale searched for parameters (the paper) or MACs "
        "per image; the baselines keep their parameter budgets (default: params)")
    add("--batch-size", type=positive_int, help="training minibatch of every training job (default: 128)")
    add("--test-batch-size", type=positive_int, help="test minibatch (default: --batch-size)")
    add("--subset", type=positive_int, help="train on the first N images, searches too (default: all)")
    add("--test_subset", type=positive_int, help="test on the first N images (default: all)")
    add("--test_order", choices=TEST_ORDERS, help="test set order (default: shuffled)")
    add("--scale_schedule", action="store_true", help="LR decays at the paper's fractions of --epochs (default: off)")
    add("--precision", choices=PRECISIONS, help="arithmetic of every job (default: fp32)")
    add("--bn_init", choices=BN_INITS, help="BatchNorm init of resnet18/mobilenetv2 (default: uniform)")
    add("--loader", choices=LOADERS, help="data pipeline (default: fast)")
    add("--no_latency", action="store_true", help="the table measures no latency (default: plot_ratio.py measures "
        "each configuration once, at the end, alone; the training jobs measure none)")
    add("--data_dir", help="where the data sets live (default: ./data)")
    add("--download", choices=("auto", "never"), help="fetch missing CIFAR/FashionMNIST (default: auto)")
    add("--device", help="torch device of every job (default: cuda when available, the worker's own GPU; "
        "cpu or cuda:N: no pinning, one worker unless --workers)")
    for family in EXTRA_FAMILIES:
        add(f"--{family}_args", default="", help=f"more arguments for every {family} job, verbatim "
            f"(e.g. --{family}_args=\"--lr 0.05\") (default: none)")


def add_executor_args(parser):
    g = group(parser, "running it")
    g.add_argument("--dry-run", action="store_true", help="print the plan as a shell script and stop")
    g.add_argument("--status", action="store_true", help="per stage: jobs done, running, failed, pending")
    g.add_argument("--executor", choices=("local", "slurm"), default="local", help="where the jobs run")
    g.add_argument("--workers", type=positive_int, default=None,
                   help="local: jobs at once (default: one per visible CUDA device x --jobs_per_gpu; 1 without)")
    g.add_argument("--jobs_per_gpu", type=positive_int, default=1, help="local: jobs sharing one GPU")
    s = group(parser, "slurm (--executor slurm)")
    s.add_argument("--slurm_partition", help="partition (default: the cluster's)")
    s.add_argument("--slurm_time", help="time limit per task, e.g. 2-00:00:00 (default: the partition's)")
    s.add_argument("--slurm_gpus", type=int, default=1, help="GPUs per task (--gres=gpu:N); 0 for none")
    s.add_argument("--slurm_cpus", type=positive_int, help="CPUs per task (default: the cluster's)")
    s.add_argument("--slurm_mem", help="memory per task, e.g. 32G (default: the cluster's)")
    s.add_argument("--slurm_array_parallelism", type=positive_int,
                   help="at most this many tasks of one array at once (default: no limit)")
    s.add_argument("--slurm_args", default="", help="more sbatch arguments, e.g. \"--qos=high --account=lab\" (default: none)")
    s.add_argument("--slurm_setup", help="a shell line each task runs first, e.g. \"source .venv/bin/activate\" "
                                         "(default: none)")


def parse_args(argv):
    parser = make_parser(__doc__)
    parser.formatter_class = type("Formatter", (argparse.RawDescriptionHelpFormatter, parser.formatter_class), {})
    add_plan_args(parser)
    add_job_args(parser)
    add_executor_args(parser)
    return parser.parse_args(argv)


def protocol_of(args):
    """The plan's settings from the flags: values, not the Namespace, go to utils/plan.py."""
    if args.search_ratio is not None:
        check_positive("--search_ratio", args.search_ratio)
    methods = list(dict.fromkeys(args.methods + (["convcut"] if args.convcut else [])))
    values = {dest: getattr(args, dest) for dest, _, _ in plan.PASS_THROUGH}
    extra = {}
    for family, targets in EXTRA_FAMILIES.items():
        try:
            tokens = shlex.split(getattr(args, f"{family}_args"))
        except ValueError as err:
            raise UserError(f"--{family}_args: {err}") from None
        extra.update({target: tokens for target in targets})
    script_dir = "." if os.path.samefile(REPO, os.getcwd()) else REPO
    return plan.Protocol(model=args.model, dataset=args.dataset, methods=tuple(methods),
                         seeds=tuple(dict.fromkeys(args.seeds)),
                         ratios=tuple(args.ratios or report.default_ratios(args.dataset)), out_dir=args.out_dir,
                         search_seed=args.search_seed, values=values, extra=extra, script_dir=script_dir)


def slurm_config(args):
    try:
        extra = tuple(shlex.split(args.slurm_args))
    except ValueError as err:
        raise UserError(f"--slurm_args: {err}") from None
    if args.slurm_gpus < 0:
        raise UserError(f"--slurm_gpus must be 0 or more, got {args.slurm_gpus}")
    return executors.SlurmConfig(
        out_dir=args.out_dir, python=sys.executable, cwd=os.getcwd(), name=f"reproduce_{args.model}_{args.dataset}",
        partition=args.slurm_partition, time=args.slurm_time, gpus=args.slurm_gpus, cpus=args.slurm_cpus,
        mem=args.slurm_mem, parallelism=args.slurm_array_parallelism, extra=extra, setup=args.slurm_setup)


def local_config(args):
    from utils.accel import visible_devices
    # Pinned workers need jobs that take "cuda" to be their one visible GPU; cpu or cuda:N turns pinning off.
    gpus = visible_devices() if args.device in (None, "cuda") else []
    slots = executors.worker_slots(gpus, args.workers, args.jobs_per_gpu)
    return executors.LocalConfig(out_dir=args.out_dir, python=sys.executable, slots=slots, cwd=os.getcwd(),
                                 env=executors.thread_env(len(slots)))


def status(jobs, out_dir):
    live = executors.queue_states(out_dir)
    holder = lock.holder(os.path.join(out_dir, LOCK))
    for line in J.status_lines(J.stages(jobs), out_dir, live, writer_alive=holder is not None):
        print(line)
    record = executors.read_record(out_dir)
    if record:
        print(f"SLURM: submitted {record['submitted']}, arrays "
              + ", ".join(f"{a['id']} ({a['stage']})" for a in record["arrays"]))
    if holder:
        print(f"running here: {holder}")
    table = next((job for job in jobs if job.name == "table"), None)
    if table is not None and J.finished(out_dir, table):
        with open(table.stdout) as f:
            print(f"\n{table.stdout}:\n{f.read()}", end="")


def execute(args, jobs):
    """Run the plan locally (the exit status) or submit it (0)."""
    log(f"plan: {len(jobs)} jobs, " + "; ".join(f"{stage} {len(m)}" for stage, m in plan.stages(jobs).items()))
    if args.executor == "slurm":
        record = executors.submit_slurm(jobs, slurm_config(args))
        for array in record["arrays"]:
            log(f"submitted {array['stage']}: array job {array['id']} of {len(array['jobs'])} tasks"
                + (f", after {array['dependency']}" if array["dependency"] else ""))
        log(f"{record['skipped']} jobs finished before, not submitted; `python reproduce.py ... --status` "
            f"shows where it stands, logs in {os.path.join(args.out_dir, J.LOGS)}")
        return 0
    config = local_config(args)
    gpus = sorted({s for s in config.slots if s is not None})
    log(f"{len(config.slots)} worker(s)" + (f" on GPU {', '.join(gpus)}" if gpus else " on the CPU")
        + f"; logs in {os.path.join(args.out_dir, J.LOGS)}")
    rc = executors.run_local(jobs, config)
    table = os.path.join(args.out_dir, "table.md")
    if rc == 0 and os.path.isfile(table):
        with open(table) as f:
            print(f.read(), end="")
    return rc


def main(argv=None):
    args = parse_args(argv)
    check_pair(args.model, args.dataset, tuple(NUM_CLASSES))
    jobs = plan.build(protocol_of(args))
    if args.dry_run:
        command = "python reproduce.py " + shlex.join(sys.argv[1:] if argv is None else argv)
        print(plan.render_script(jobs, python=sys.executable, cwd=os.getcwd(), command=command), end="")
        return
    if args.status:
        status(jobs, args.out_dir)
        return
    writable_dir(args.out_dir)
    with lock.hold(os.path.join(args.out_dir, LOCK), f"output folder {args.out_dir}"):
        rc = execute(args, jobs)
    if rc:
        sys.exit(rc)


if __name__ == "__main__":
    run_main(main)
