// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";

/// An ERC-20 for tests: the whole initial supply goes to the deployer.
contract TestToken is ERC20 {
    constructor(string memory name_, string memory symbol_, uint256 initialSupply)
        ERC20(name_, symbol_)
    {
        _mint(msg.sender, initialSupply);
    }
}

/// A contract whose only function always reverts with a reason, to test failed transactions.
contract Reverter {
    string public constant REASON = "Reverter: always reverts";

    function fail() external pure {
        revert(REASON);
    }
}
