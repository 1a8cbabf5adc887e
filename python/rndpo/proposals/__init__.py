"""The proposal bank: K candidate masks per image and the sources that generate them."""

from rndpo.proposals.bank import (
    ProposalBank,
)
from rndpo.proposals.generate import (
    PROPOSAL_SOURCES,
    TTA_VARIANTS,
    ProposalConfig,
    allocate_sources,
    generate_proposals,
)

__all__ = [
    "PROPOSAL_SOURCES",
    "TTA_VARIANTS",
    "ProposalBank",
    "ProposalConfig",
    "allocate_sources",
    "generate_proposals",
]
