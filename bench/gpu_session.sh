#!/usr/bin/env bash
# One prepared run on a lent GPU machine: the checks and benchmarks whose figures go into the README
# and docs/gpu.md, then every script of the protocol once on CUDA at tiny settings. Each step has its
# own time limit so that one hang cannot eat the others; logs go to $OUT (or ./gpu_session_logs).
# Usage: bash bench/gpu_session.sh [quick]   (quick: fewer benchmark steps, no test run)
set -u
OUT=${OUT:-gpu_session_logs}; mkdir -p "$OUT"
PY=${PY:-python3}
export PYTHONUNBUFFERED=1
step() {  # step NAME SECONDS CMD...: run CMD under a limit, log to $OUT/NAME.log, print its status
  local name=$1 limit=$2; shift 2
  local t0=$(date +%s)
  timeout "$limit" "$@" >"$OUT/$name.log" 2>&1; local rc=$?
  echo "== $name rc=$rc $(( $(date +%s) - t0 )) s"; tail -n "${TAIL:-25}" "$OUT/$name.log"
}
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader
$PY -c "import torch, torchvision, numpy; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'numpy', numpy.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version(), torch.cuda.get_device_name())"
nproc
step gpu_check 200 $PY bench/gpu_check.py --verbose
for model in vgg resnet18 mobilenetv2; do
  descent=(--descent-steps 0); [ "$model" = vgg ] && descent=(--descent-steps 5 --descent-limit 90)
  step "throughput_$model" 100 $PY bench/train_throughput.py --device cuda --model "$model" --steps 30 --reps 3 "${descent[@]}"
done
# Every protocol script on CUDA, tiny: search, swipes, Li et al., table.
S=$(mktemp -d); D=(--dataset synthetic --device cuda --out_dir "$S" --subset 2048)
TAIL=6 step smoke_search 70 $PY architecture_descent.py --model vgg "${D[@]}" --iterations 2 --warmup 1 --prune_every 2 --prune_per_step 40 --seed 0 --save s
TAIL=6 step smoke_swipe 70 $PY ratio_swipe.py --model vgg "${D[@]}" --test_subset 512 --prune_fname s --descent_idx 1 --ratios 0.25 1 --epochs 2 --seed 0 --save vgg_late_s_0
TAIL=6 step smoke_uniform 70 $PY ratio_swipe.py --model mobilenetv2 "${D[@]}" --test_subset 512 --uniform --ratios 0.5 --epochs 1 --seed 0 --precision bf16 --save mnv2_uni_0
TAIL=6 step smoke_li 70 bash -c "$PY train_norm.py --model resnet18 ${D[*]} --test_subset 512 --epochs 1 --seed 0 --save rn_norm && $PY fine_tune.py --model resnet18 ${D[*]} --test_subset 512 --epochs 1 --seed 0 --resume rn_norm --save rn_ft"
# --deterministic on CUDA: one tiny swipe twice (ResNet18: its global pooling is the op most likely to lack a
# deterministic CUDA kernel); prints IDENTICAL when the two runs' curves agree bit for bit, else DIFFER.
DET="$PY ratio_swipe.py --model resnet18 ${D[*]} --test_subset 512 --uniform --ratios 0.5 --epochs 2 --seed 0 --deterministic --no_latency"
SAME='import sys; from utils import io; a, b = (io.load_result(p) for p in sys.argv[1:]); keys = ("train_loss", "train_acc", "test_loss", "test_acc"); print("IDENTICAL" if all(a[k] == b[k] for k in keys) else "DIFFER", {k: max(abs(x - y) for x, y in zip(a[k], b[k])) for k in keys})'
TAIL=4 step deterministic 150 bash -c "$DET --save det_a && $DET --save det_b && $PY -c '$SAME' $S/saved_plots/resnet18/det_a_50.pk $S/saved_plots/resnet18/det_b_50.pk"
TAIL=20 step smoke_table 60 $PY plot_ratio.py --model vgg --dataset synthetic --out_dir "$S" --ratios 0.25 1 --seeds 0 --methods neuralscale_it15 --late_name vgg_late_s --prune_fname s --late_idx 1
[ "${1:-}" = quick ] || TAIL=15 step tests_fast 110 $PY -m pytest -q -n 8 -m "not slow" tests -p no:cacheprovider
