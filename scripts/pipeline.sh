# Sourced by the demo scripts: train a generated model, recompute its BN statistics, test it,
# plot the loss and draw the net. Needs $python, $out (holding prototxt/ from
# generate_prototxts.py --out $out/prototxt --snapshots $out/snapshots), $start and $gpu (a
# CUDA device id for training and testing, or empty for the CPU) and optionally $seed (the
# solver's random_seed for this run) and $classes (test_segmentation_camvid.py's --classes).
#   run_pipeline MODEL ITERATIONS BN_BATCHES TEST_BATCHES
run_pipeline() {
  local model=$1 iterations=$2 bn_batches=$3 test_batches=$4
  local prototxt=$out/prototxt/$model
  echo "== train $model for $iterations iterations (log: $out/train.log)"
  mkdir -p "$out/snapshots"
  bash train.sh "${prototxt}_solver.prototxt" --iterations "$iterations" --log_file "$out/train.log" \
    ${gpu:+--gpu "$gpu"} ${seed:+--seed "$seed"}

  # Each BN layer's statistics of the inputs the inference net gives it: the layers before it
  # already normalising by theirs (--sequential), on whole images if it trained on crops.
  echo "== BN statistics over $bn_batches training batches, layer after layer"
  "$python" scripts/compute_bn_statistics.py "${prototxt}_train.prototxt" \
    "$out/snapshots/${model}_iter_$iterations.caffemodel" "$out/bn" --iterations "$bn_batches" \
    --sequential --whole-images

  echo "== test on $test_batches batches of the test list"
  ${gpu:+env CUDA_VISIBLE_DEVICES="$gpu"} "$python" scripts/test_segmentation_camvid.py \
    --model "${prototxt}_inference.prototxt" \
    --weights "$out/bn/test_weights.caffemodel" --iter "$test_batches" --samples 4 --out "$out/test" \
    ${gpu:+--gpu} ${classes:+--classes "$classes"}

  echo "== loss curve and network diagram"
  "$python" -m segnet_caffe plot "$out/train.log" "$out/loss.png"
  "$python" -m segnet_caffe draw "${prototxt}_train.prototxt" "$out/net.png" --rankdir LR

  echo
  echo "done in $((SECONDS - start)) s. Pictures: $out/test/sample_*.png (input | truth |"
  echo "prediction), $out/test/confusion_matrix.png, $out/loss.png, $out/net.png;"
  echo "scores: $out/test/metrics.json"
}
