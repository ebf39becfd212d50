"""The pure model: steps, the Run aggregate, the receipt, findings, the hash chain. No I/O."""
