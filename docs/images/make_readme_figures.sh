#!/usr/bin/env bash
# Regenerate the README figures (docs/images/) from the main job, run into a scratch folder.
# Usage (from the repository root): bash docs/images/make_readme_figures.sh [scratch folder]
set -euo pipefail
RUN=${1:-results/readme_run}
rm -rf "$RUN"
PY=.venv/bin/python
$PY scripts/train_personality_model.py --static_features data_sample/static_features.npy \
  --dynamic_features data_sample/dynamic_features.npy --labels data_sample/labels.npy --val_split 0.2 \
  --batch_size 16 --epochs 50 --output "$RUN/personality_model_trained.h5"
$PY scripts/visualize_training_metrics.py --history "$RUN/training_history.npy" \
  --output "$RUN/training_visualizations"
$PY scripts/analyze_model_predictions.py --model "$RUN/personality_model_trained.h5" \
  --static_features data_sample/static_features.npy --dynamic_features data_sample/dynamic_features.npy \
  --labels data_sample/labels.npy --output "$RUN/prediction_analysis"
for f in loss per_trait_r_squared r2_comparison metric_correlation dashboard; do
  cp "$RUN/training_visualizations/$f.png" docs/images/
done
for f in extraversion_scatter model_vs_baseline residuals trait_correlations attention_maps; do
  cp "$RUN/prediction_analysis/$f.png" docs/images/
done
python3 -c "import json; s=json.load(open('$RUN/training_summary.json')); print('best epoch', s['best_epoch'], 'of', s['epochs_run'], 'val R2', round(s['best_validation']['val_r_squared'], 3))"
