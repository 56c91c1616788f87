// SPDX-License-Identifier: Apache-2.0
// Separate compilation: the one translation unit that compiles Asio, Asio SSL and Beast, so other
// files include only the declarations they use (BOOST_ASIO_SEPARATE_COMPILATION).
#include <boost/asio/impl/src.hpp>
#include <boost/asio/ssl/impl/src.hpp>
#include <boost/beast/src.hpp>
