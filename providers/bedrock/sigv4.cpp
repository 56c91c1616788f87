// SPDX-License-Identifier: Apache-2.0
#include "providers/bedrock/sigv4.hpp"
