"""Several tests read together: Holm's adjustment, and p-values shown without rounding across alpha."""


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjustment of p-values for testing them together (the family-wise error rate)."""
    order = sorted(range(len(p_values)), key=p_values.__getitem__)
    adjusted, running = [0.0] * len(p_values), 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted


def format_p(p_value: float, alpha: float) -> str:
    """A p-value as a reader sees it: never rounded onto or across alpha (0.0496 at 0.05 is "0.0496")."""
    for digits in range(2, 8):
        shown = f"{p_value:.{digits}g}"
        if (float(shown) < alpha) == (p_value < alpha) and float(shown) != alpha:
            return shown
    return repr(p_value)
