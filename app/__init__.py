"""The application layer: what a user runs, built from the runtime's parts once, shared by the CLI, Triton
and the bench. `Searcher` turns a query image into ranked gallery images; `backends` opens a model's
backend from what a user gives (a backend name, an artifacts folder, a checkpoint)."""
