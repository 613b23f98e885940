"""Solvers: the training loop (solver.py), the update rules (sgd.py), learning-rate policies.

`get_solver(path_or_param)` builds the solver its SolverParameter `type`
names (Caffe's SolverRegistry::CreateSolver); the classes can also be
constructed directly, as pycaffe's `caffe.SGDSolver(path)`, whatever the
file's type says.
"""
from .lr_policy import POLICIES, learning_rate  # noqa: F401
from .sgd import (AdaDeltaSolver, AdaGradSolver, AdamSolver, NesterovSolver,  # noqa: F401
                  RMSPropSolver, SGDSolver)
from .solver import (Solver, load_solver_param, make_snapshot_directory, solver_class,  # noqa: F401
                     solver_type_list)


def get_solver(source):
    """The solver for a solver .prototxt path or SolverParameter, chosen by its `type`."""
    param, where = load_solver_param(source)
    return solver_class(param.type, where)(param, where=where)
