"""The proposal bank: K candidate label maps per image and the sources that generate them."""

from rndpo.proposals.bank import (
    ProposalBank,
)
from rndpo.proposals.generate import (
    PROPOSAL_SOURCES,
    ProposalConfig,
    allocate_sources,
    generate_proposals,
)
from rndpo.proposals.sources import (
    TTA_FLIPS_3D,
    TTA_VARIANTS,
    ball,
)

__all__ = [
    "PROPOSAL_SOURCES",
    "TTA_FLIPS_3D",
    "TTA_VARIANTS",
    "ProposalBank",
    "ProposalConfig",
    "allocate_sources",
    "ball",
    "generate_proposals",
]
