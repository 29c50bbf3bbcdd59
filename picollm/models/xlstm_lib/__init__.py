"""The official xLSTM library behind our interface (the optional `xlstm` extra): config.py and model.py."""
