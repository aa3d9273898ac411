"""Aggregation kernels: plain functions ``name(updates, weights=None, *, ..., key=None) -> Tensor[d]``."""

# group 1
from fedkit.aggregators.bulyan import Bulyan as Bulyan
from fedkit.aggregators.bulyan import bulyan as bulyan
from fedkit.aggregators.centered_clipping import CenteredClipping as CenteredClipping
from fedkit.aggregators.centered_clipping import centered_clipping as centered_clipping
from fedkit.aggregators.geometric_median import GeometricMedian as GeometricMedian
from fedkit.aggregators.geometric_median import geometric_median as geometric_median
from fedkit.aggregators.krum import Krum as Krum
from fedkit.aggregators.krum import MultiKrum as MultiKrum
from fedkit.aggregators.krum import krum as krum
from fedkit.aggregators.krum import krum_scores as krum_scores
from fedkit.aggregators.krum import multi_krum as multi_krum
from fedkit.aggregators.meamed import MeaMed as MeaMed
from fedkit.aggregators.meamed import meamed as meamed
from fedkit.aggregators.mean import Mean as Mean
from fedkit.aggregators.mean import mean as mean
from fedkit.aggregators.median import Median as Median
from fedkit.aggregators.median import median as median
from fedkit.aggregators.trimmed_mean import TrimmedMean as TrimmedMean
from fedkit.aggregators.trimmed_mean import trimmed_mean as trimmed_mean

# isort: split
# group 2
from fedkit.aggregators.caf import CAF as CAF
from fedkit.aggregators.caf import caf as caf
from fedkit.aggregators.clipped_clustering import ClippedClustering as ClippedClustering
from fedkit.aggregators.clipped_clustering import clipped_clustering as clipped_clustering
from fedkit.aggregators.dnc import DnC as DnC
from fedkit.aggregators.dnc import dnc as dnc
from fedkit.aggregators.fltrust import FLTrust as FLTrust
from fedkit.aggregators.fltrust import fltrust as fltrust
from fedkit.aggregators.mda import MDA as MDA
from fedkit.aggregators.mda import mda as mda
from fedkit.aggregators.monna import MoNNA as MoNNA
from fedkit.aggregators.monna import monna as monna
from fedkit.aggregators.sign_guard import SignGuard as SignGuard
from fedkit.aggregators.sign_guard import sign_guard as sign_guard
from fedkit.aggregators.smea import SMEA as SMEA
from fedkit.aggregators.smea import smea as smea

# isort: split
# group 3
from fedkit.aggregators.flame import FLAME as FLAME
from fedkit.aggregators.flame import FlameRound as FlameRound
from fedkit.aggregators.flame import flame as flame
from fedkit.aggregators.flame import flame_round as flame_round
from fedkit.aggregators.rlr import RLR as RLR
from fedkit.aggregators.rlr import rlr as rlr
from fedkit.aggregators.rlr import rlr_round as rlr_round
