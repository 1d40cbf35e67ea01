"""Evaluation: generation over a test set, metrics, comparison tables, plots and the gallery.

python -m evaluation.run      --model PATH --data DIR --out OUT      # generate + score
python -m evaluation.compare  --runs base=OUT1 rl=OUT2 --out DIR     # table, plots, gallery
python -m evaluation.adapter  --config evaluation/adapters/xraybench.yaml --input FILE --out DIR
"""
