#!/usr/bin/env bash
# The one GPU check (issue "Training and planning at the hardware's speed"), within 8 minutes on one GPU:
#   1. training speed of the paper U-Maze, hopper and Large presets, eager and compiled (CUDA graphs), fp32 and bf16;
#   2. planning speed of the paper planner (64 candidates, exact sampler, guided) for 1 env and for 50 envs per call;
#   3. the hopper paper preset trained for the time left, a checkpoint about every minute, then its last checkpoint
#      scored on a few episodes (unguided: no value model is trained here).
# Output: stdout and $OUT/ (device_check.log, training_speed.json). Needs the wheels of benchmarks/device_wheels.sh
# in .whl/ (carry [".whl"]). Without CUDA it runs every step at toy size on the CPU, eager only, to check the wiring.
set -uo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
budget=${DEVICE_CHECK_SECONDS:-480}
out=${OUT:-/tmp/device_check}
mkdir -p "$out"
exec > >(tee "$out/device_check.log") 2>&1
export PYTHONUNBUFFERED=1 WANDB_MODE=disabled MUJOCO_GL=egl PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
left() { echo $(( budget - ($(date +%s) - start) )); }

if python3 -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  device=cuda; nvidia-smi -L
  train_presets="umaze_paper hopper32 large_paper"; repeats=30; n_envs="1 50"; data_steps=300000; episodes=10
else
  device=cpu; echo "no CUDA here: every step at toy size on the CPU (a wiring check, not a measurement)"
  train_presets="tiny"; repeats=2; n_envs="1 2"; data_steps=3000; episodes=2
fi
python3 -c "import torch; print('torch', torch.__version__)"

echo "== 1. training speed ($device): eager fp32, bf16, compiled"
python3 benchmarks/training_speed.py --device $device --presets $train_presets --repeats $repeats --bf16 \
  $([ $device = cuda ] && echo "--compile reduce-overhead") --json "$out/training_speed.json"

echo "== 2. planning speed ($device), paper planner, N = $n_envs envs per call  [$(left) s left]"
modes=(exact); [ $device = cuda ] && modes+=("exact, compiled")
python3 benchmarks/planning_speed.py --device $device --preset paper --no-diffusers --repeats 5 --warmup 1 \
  --modes "${modes[@]}" --scaling-modes "${modes[@]}" --n-envs $n_envs $([ $device = cpu ] && echo "--quick")

echo "== 3. hopper paper preset: data, training for the time left, a few episodes  [$(left) s left]"
export D4RL_DATASET_DIR=/tmp/d4rl
python3 -m diffuser.tools.collect --dataset hopper-medium-v2 --size $data_steps --n-envs 16
steps_per_s=$(python3 -c "import json; t = json.load(open('$out/training_speed.json'))['seconds']; \
print(1 / t.get('hopper32', t[next(iter(t))])['step'])")
save_freq=$(python3 -c "print(max(100, int($steps_per_s * 60) // 100 * 100))")
train_seconds=$(( $(left) - 60 ))
echo "eager step: $steps_per_s steps/s -> a checkpoint every $save_freq steps; training for $train_seconds s"
timeout --signal=INT $train_seconds python3 train.py experiment=locomotion logger=disabled runs_root=/tmp/runs \
  run_dir=/tmp/runs/hopper-medium-v2/paper/device_check trainer.save_freq=$save_freq trainer.sample_freq=0 \
  device=$device $([ $device = cpu ] && echo "model.dim=8 trainer.n_train_steps=20 trainer.save_freq=10")
ls /tmp/runs/hopper-medium-v2/paper/device_check/checkpoints || true
python3 plan.py env=locomotion planner=locomotion exp_name=paper guide=none runs_root=/tmp/runs logger=disabled \
  diffusion_run=/tmp/runs/hopper-medium-v2/paper/device_check planner.n_episodes=$episodes planner.video=false \
  device=$device $([ $device = cpu ] && echo "planner.max_episode_steps=5 planner.batch_size=2")
echo "== done in $(( $(date +%s) - start )) s"
