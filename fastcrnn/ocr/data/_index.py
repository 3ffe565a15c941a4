"""The index rule the datasets share."""


def wrap_index(index: int, num_samples: int) -> int:
    """``index`` as a position in [0, num_samples): a negative one counts from the end, as in a
    list; IndexError outside."""
    if index < 0:
        index += num_samples
    if not 0 <= index < num_samples:
        raise IndexError(f"index {index} out of range for {num_samples} samples")
    return index
