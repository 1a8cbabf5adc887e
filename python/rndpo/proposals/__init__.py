"""The proposal bank: K candidate masks per image and the sources that generate them."""

from rndpo.proposals.bank import (
    PROPOSAL_SOURCES,
    ProposalBank,
    ProposalConfig,
    TTA_VARIANTS,
    allocate_sources,
    generate_proposals,
)

__all__ = [
    "PROPOSAL_SOURCES",
    "ProposalBank",
    "ProposalConfig",
    "TTA_VARIANTS",
    "allocate_sources",
    "generate_proposals",
]
