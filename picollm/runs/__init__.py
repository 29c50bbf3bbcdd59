"""The run directory, the contract between the stages: its layout and files, the checkpoint format, loading a
run, its TensorBoard event files, and the table of all runs."""
