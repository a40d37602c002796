"""Test-time augmentation's views: the image itself, then copies shifted by one pixel.

A digit drawn a pixel off is still the same digit, so averaging the views' probabilities smooths out
the model's sensitivity to where exactly the strokes fall. The one definition of the view counts that
params.yaml (evaluate.tta_views), the evaluate stage, mnist-predict and mnist-app accept.
"""

# (rows down, columns right) of each view, by the number of views.
VIEWS = {
    1: [(0, 0)],
    5: [(0, 0), (-1, 0), (1, 0), (0, -1), (0, 1)],
    9: [(0, 0), (-1, 0), (1, 0), (0, -1), (0, 1), (-1, -1), (-1, 1), (1, -1), (1, 1)],
}
