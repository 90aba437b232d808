"""The training data path: D4RL-layout reader and writer, Minari reader, preprocessing, window datasets."""
