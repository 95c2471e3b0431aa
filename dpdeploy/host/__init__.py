"""What the host is: facts (a frozen dataclass) and the probe that reads them."""
