"""Everything about training: loss, learning-rate schedule, the LightningModule, the run."""
