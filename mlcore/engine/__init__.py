"""The pure algorithms: numpy/pandas/scikit-learn/mlxtend/torch only, never Django, so
they are tested on arrays and run on a GPU box that has no Django or database."""
