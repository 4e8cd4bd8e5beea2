"""The notebook's data and the batch order every engine shares."""

import numpy as np

from pipeline.data import batch_order, make_identity_data


def test_notebook_data_split():
    data = make_identity_data(2000, 0.0, 1.0, 0.2, 23)
    assert data.x_train.shape == (1600, 1) and data.x_test.shape == (400, 1)
    np.testing.assert_array_equal(data.x_train, data.y_train)
    np.random.seed(23)
    assert np.float32(np.random.uniform(size=2000)[0]) in set(
        np.concatenate([data.x_train, data.x_test]).ravel()
    )


def test_input_range_is_respected():
    data = make_identity_data(500, -2.0, -1.0, 0.2, 0)
    assert data.x_train.min() >= -2.0 and data.x_train.max() < -1.0


def test_batch_order_is_a_permutation_per_epoch_and_depends_on_seed():
    order = batch_order(3, 100, 4)
    assert order.shape == (4, 100)
    assert all(sorted(row) == list(range(100)) for row in order.tolist())
    np.testing.assert_array_equal(order, batch_order(3, 100, 4))
    assert not np.array_equal(order, batch_order(4, 100, 4))
    assert not np.array_equal(order[0], order[1])
