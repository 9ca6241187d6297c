"""Small configurations of the real architectures that several test modules build (torch-free, so a module
that skips without torch can import it first)."""

#: LOCORE at 2 layers of width 32 over 5 local descriptors of 32-d: what the runtime and serving tests export
LOCORE_TINY = {"hidden_size": 32, "num_layers": 2, "num_heads": 4, "intermediate_size": 64, "attention_window": 8,
               "max_positions": 130, "local_dim": 32, "global_dim": 32, "local_descriptors": 5}
