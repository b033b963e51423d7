"""Data parallelism (layer 4): a device mesh, and where ``fit`` and the evaluation functions put arrays.

Data-parallel training in JAX needs no special code in the model or the loss. One says *where* each array
lives, and ``jax.jit`` compiles the same program for all devices (the "single program, multiple data"
partitioner of XLA inserts the communication):

- a ``jax.sharding.Mesh`` names the devices along an axis, here ``"data"``;
- a batch ``(B, D)`` is *sharded* over that axis (``PartitionSpec("data")``): each of the ``n`` devices
  holds ``B / n`` rows and computes their part of the loss and its gradient;
- the parameters and the optimizer state are *replicated* (``PartitionSpec()``): every device holds all of
  them; the gradient of a mean over the batch is then a sum over devices (an all-reduce XLA adds), and
  every device applies the same update.

The same code runs on one process with several devices (a GPU node, or ``n`` simulated CPU devices with
``XLA_FLAGS=--xla_force_host_platform_device_count=n``) and on several processes (hosts) after
``jax.distributed.initialize()``: each process then passes the rows of the data it holds, and
``jax.make_array_from_process_local_data`` makes them one global array (process 0's rows first).
Parameters are replicated rather than sharded (as ZeRO/FSDP would) because a VAE of this course has at
most a few million parameters: they fit on every device, and replication keeps the update a plain
Optax update.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from vae_lib import _checks

DATA_AXIS = "data"


def data_mesh(num_devices: int | None = None) -> Mesh:
    """A one-axis mesh named ``"data"`` over the first ``num_devices`` devices (default: all of them).

    With several processes, ``jax.devices()`` lists the devices of every process, so the default mesh
    spans all hosts.
    """
    devices = jax.devices()
    if num_devices is None:
        num_devices = len(devices)
    if _checks.positive_int("num_devices", num_devices) > len(devices):
        raise ValueError(f"num_devices must be at most {len(devices)} (JAX sees those), got {num_devices}")
    return Mesh(np.array(devices[:num_devices]), (DATA_AXIS,))


def check_mesh(mesh) -> int:
    """Check that ``mesh`` is a ``jax.sharding.Mesh`` with a ``"data"`` axis; return that axis's size."""
    if not isinstance(mesh, Mesh):
        raise TypeError(
            f"mesh must be a jax.sharding.Mesh (e.g. vae_lib.data_mesh()), got {type(mesh).__name__}"
        )
    if DATA_AXIS not in mesh.axis_names:
        raise ValueError(
            f"mesh must have an axis named {DATA_AXIS!r} to shard the batch over, got axes {mesh.axis_names}"
        )
    return mesh.shape[DATA_AXIS]


def rows(mesh: Mesh, ndim: int, axis: int = 0) -> NamedSharding:
    """The sharding that splits axis ``axis`` of an ``ndim``-dimensional array over the mesh's data axis."""
    spec = [None] * ndim
    spec[axis] = DATA_AXIS
    return NamedSharding(mesh, PartitionSpec(*spec))


def replicated(mesh: Mesh) -> NamedSharding:
    """The sharding that puts a whole copy of an array on every device of the mesh."""
    return NamedSharding(mesh, PartitionSpec())


def shard_rows(mesh: Mesh, local_rows, axis: int = 0) -> jax.Array:
    """One global array, split over the data axis, from the rows this process holds.

    With one process, ``local_rows`` is the whole array. With several, each process passes its own rows
    and the global array is their concatenation in process order.
    """
    return jax.make_array_from_process_local_data(
        rows(mesh, np.ndim(local_rows), axis), np.asarray(local_rows)
    )


def replicate(mesh: Mesh, tree):
    """A copy of every array of ``tree`` on every device of the mesh (the same values in every process)."""
    sharding = replicated(mesh)

    def one(a):
        if jax.dtypes.issubdtype(getattr(a, "dtype", None), jax.dtypes.prng_key):  # a typed key: its raw data
            return jax.random.wrap_key_data(one(jax.random.key_data(a)), impl=jax.random.key_impl(a))
        return jax.make_array_from_process_local_data(sharding, np.asarray(a))

    return jax.tree.map(one, tree)
