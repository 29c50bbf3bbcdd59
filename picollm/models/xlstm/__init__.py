"""The xLSTM family: config.py (settings, recipe, block layout; no torch), kernels.py (the mLSTM and sLSTM
cells) and model.py (the blocks and the model)."""
