"""Named sets of defaults shared by the scripts (`--preset NAME`; explicit flags still win)."""

# Small enough to train in about five minutes on a 2-core CPU (~12k tokens/s there), big enough to
# write recognisable Shakespeare: character names, line breaks, word shapes.
CPU_PRESET = dict(n_layer=4, n_head=4, n_embd=128, block_size=64, batch_size=32, dropout=0.0,
                  max_steps=2000, eval_interval=250, eval_iters=20, lr=1e-3, min_lr=1e-4, schedule="cosine",
                  warmup_steps=100)
