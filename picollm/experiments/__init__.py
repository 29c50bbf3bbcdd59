"""Experiments that span several runs or families (`python xlstm_study.py lm|nn ...`).

- xlstm_vs_baselines: LSTM vs xLSTM (ours and the library) vs Transformer language models at matched
  parameter counts, test perplexity overall and by training-frequency bucket.
- nearest_neighbour: a synthetic associative-recall task (the label of the nearest reference vector),
  accuracy against the number of references, for every family's block stack.
"""
