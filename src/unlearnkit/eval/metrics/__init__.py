"""One module per metric family; each metric registers itself with `@register_metric`.

The registry imports every module here on first use (modules starting with `_` are helpers).
"""
