"""The model path: the runner, its batcher, admission and the memory budget, CPU threads, baking
weights.
"""
