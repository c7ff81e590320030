"""pointgate POS SDK: what a point-of-sale vendor embeds to accept pointgate codes."""

__all__: list[str] = []
