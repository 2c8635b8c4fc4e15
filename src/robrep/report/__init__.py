"""Reports: figures, image grids, HTML."""

from .images import amplify, image_grid, save_image_grid

__all__ = ["amplify", "image_grid", "save_image_grid"]
