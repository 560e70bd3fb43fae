"""Training: the loop (``loop``), its parts (model, preprocessing, device: ``parts``), the recipes and the
paper's departures (``recipes``), the learning-rate schedule, fine-tuning, the run folder, diagnosis and
multi-GPU setup."""
