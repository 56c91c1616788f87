// SPDX-License-Identifier: Apache-2.0
#pragma once
// (being written: see the issue on Azure, Bedrock and Vertex)
